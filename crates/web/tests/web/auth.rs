//! Sign-up, sign-in and sessions through HTTP: sign-up by a mailed link that answers the same
//! whether or not the address has an account, cookie attributes, session rotation, server-side
//! sign-out, timeouts, rehash on sign-in, anti-forgery, throttling without lock-out, and generic
//! failures.

use domain::{Email, Role, TenantId, UserId};
use store::{Actor, Database};
use test_support::TestDatabase;

use crate::browser::Browser;
use crate::serve;
use crate::site::{assert_cookie_attributes, assert_security_headers};

pub const PASSWORD: &str = "correct horse battery staple";

fn sign_up_fields<'a>(email: &'a str, workspace: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("display_name", "Ada Lovelace"),
        ("email", email),
        ("password", PASSWORD),
        ("workspace", workspace),
        ("plan", "business"),
        ("industry", "Energy"),
        ("region", "EU-West"),
    ]
}

/// An account with `PASSWORD`, member of `tenant` with `role`.
pub async fn member(database: &Database, tenant: TenantId, email: &str, role: Role) -> UserId {
    let email = Email::parse(email).unwrap();
    let user = match store::accounts::credentials(&database.app, &email)
        .await
        .unwrap()
    {
        Some(existing) => existing.user_id,
        None => {
            store::control::create_user(&database.app, Actor::System("test"), &email, "Test")
                .await
                .unwrap()
                .user_id
        }
    };
    let hash = web::auth::password::hash(PASSWORD);
    store::accounts::set_password_hash(&database.app, user, &hash)
        .await
        .unwrap();
    store::control::set_member(&database.app, Actor::System("test"), tenant, &email, role)
        .await
        .unwrap();
    user
}

pub async fn sign_in(browser: &mut Browser, email: &str, password: &str) -> crate::browser::Page {
    browser
        .submit(
            "/auth",
            "/auth/sign-in",
            &[("email", email), ("password", password)],
        )
        .await
}

/// A browser signed in as `email` (with `PASSWORD`).
pub async fn signed_in(addr: &str, email: &str) -> Browser {
    let mut browser = Browser::new(addr);
    assert_eq!(sign_in(&mut browser, email, PASSWORD).await.status, 303);
    browser
}

async fn stored_hash(database: &Database, email: &str) -> String {
    store::accounts::credentials(&database.app, &Email::parse(email).unwrap())
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap()
}

/// What the server logs beside a sign-up link when no mail server is configured.
pub const SIGN_UP_LINK: &str = "sign-up link (no mail server configured; deliver it by hand)";
/// What it logs when an existing account's address was used to sign up, without mail.
const SIGN_UP_NOTICE: &str = "sign-up attempted with an existing account's address";

/// Submits the sign-up form for `email` and `workspace` from the sign-up page.
pub async fn submit_sign_up(
    browser: &mut Browser,
    email: &str,
    workspace: &str,
) -> crate::browser::Page {
    browser
        .submit(
            "/auth?mode=sign-up",
            "/auth/sign-up",
            &sign_up_fields(email, workspace),
        )
        .await
}

/// The newest sign-up link in the server log whose pending sign-up, in `database`, is for
/// `email` and still usable. (The log is shared by every test of the process; each test has its
/// own database, so a link from another test never resolves here.)
async fn sign_up_link_now(database: &Database, email: &str) -> Option<String> {
    let log = log_text();
    let links: Vec<String> = log
        .lines()
        .filter(|line| line.contains(SIGN_UP_LINK))
        .filter_map(|line| {
            let start = line.find("link=/auth/sign-up/")? + "link=".len();
            Some(line[start..start + "/auth/sign-up/".len() + 64].to_owned())
        })
        .collect();
    for link in links.iter().rev() {
        let token = link.trim_start_matches("/auth/sign-up/");
        let pending = store::accounts::pending_sign_up(&database.app, token)
            .await
            .unwrap();
        if let Some(pending) = pending.filter(|pending| pending.email == email) {
            // The line names the pending sign-up by its id, never by the address.
            assert_eq!(
                logged_link(
                    SIGN_UP_LINK,
                    &pending.signup_id.to_string(),
                    "/auth/sign-up/"
                )
                .as_deref(),
                Some(link.as_str())
            );
            return Some(link.clone());
        }
    }
    None
}

/// [`sign_up_link_now`], waiting up to ten seconds for it: the sign-up is recorded and its link
/// sent after the answer.
pub async fn logged_sign_up_link(database: &Database, email: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(link) = sign_up_link_now(database, email).await {
            return Some(link);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits for the line saying that someone tried to sign up with `user`'s address, and returns it.
async fn logged_sign_up_notice(user: UserId) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = log_text()
            .lines()
            .find(|line| line.contains(SIGN_UP_NOTICE) && line.contains(&user.to_string()))
            .map(str::to_owned);
        if let Some(line) = found {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sign-up notice logged for {user}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn pending_sign_up_count(test_database: &TestDatabase, email: &str) -> i64 {
    let mut admin = test_database.admin().await;
    sqlx::query_scalar("select count(*) from control.pending_signups where email = $1")
        .bind(email)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

async fn workspace_count(test_database: &TestDatabase, name: &str) -> i64 {
    let mut admin = test_database.admin().await;
    sqlx::query_scalar("select count(*) from control.dim_tenant where name = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

fn log_text() -> String {
    String::from_utf8_lossy(&server_log().lock().unwrap()).into_owned()
}

#[tokio::test]
async fn sign_up_creates_a_workspace_with_its_owner_and_signs_in() {
    server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let mut browser = Browser::new(&addr);

    // The form creates nothing yet: it answers "check your email" and logs a link (no mail
    // server here).
    let sent = submit_sign_up(&mut browser, "ada@example.com", "Analytical Engines").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.body.contains("Check your email"), "{}", sent.body);
    assert!(sent.body.contains("ada@example.com") && sent.body.contains("Analytical Engines"));
    assert!(sent.set_cookie("__Host-tributary-session").is_none());
    assert!(
        !sent.body.contains(PASSWORD),
        "a password is never sent back"
    );
    assert_security_headers(&sent, "sign-up sent");
    let email = Email::parse("ada@example.com").unwrap();
    assert!(
        store::accounts::credentials(&database.app, &email)
            .await
            .unwrap()
            .is_none()
    );
    let link = logged_sign_up_link(&database, "ada@example.com")
        .await
        .expect("the sign-up link is in the server log");

    // The link shows what it creates, and a button that does it.
    let confirm = browser.get(&link).await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.body.contains("Create Analytical Engines"),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains(&format!(r#"action="{link}""#)));
    let page = browser.submit(&link, &link, &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.header("location"), Some("/app"));
    assert_security_headers(&page, "sign-up redirect");
    assert_cookie_attributes(&page, "sign-up");
    assert!(page.set_cookie("__Host-tributary-session").is_some());
    assert!(
        page.set_cookie("__Host-tributary-csrf").is_some(),
        "rotated"
    );

    let overview = browser.get("/app/settings/account").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("Analytical Engines"));
    assert!(overview.body.contains("ada@example.com · owner"));
    // The workspace's facts are on the account page, which the user menu links to.
    assert!(overview.body.contains(r#"<a href="/app/settings/account""#));
    let account = browser.get("/app/settings/account").await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains("business"));
    assert!(account.body.contains("eu-west"));
    assert_security_headers(&overview, "app page");

    // The database agrees: one account, owner of one new workspace, the sign-up audited there.
    let credentials = store::accounts::credentials(&database.app, &email)
        .await
        .unwrap()
        .unwrap();
    let workspaces = store::accounts::memberships(&database.app, credentials.user_id)
        .await
        .unwrap();
    assert_eq!(workspaces.len(), 1);
    assert_eq!(workspaces[0].role, Role::Owner);
    assert_eq!(workspaces[0].plan, "business");
    // Argon2id at m=19456 KiB, t=2, p=1 at least (OWASP), read from the stored PHC string.
    let hash = credentials.password_hash.unwrap();
    let params: Vec<u32> = hash
        .split('$')
        .nth(3)
        .unwrap()
        .split(',')
        .map(|pair| pair.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(
        params[0] >= 19_456 && params[1] >= 2 && params[2] >= 1,
        "{hash}"
    );
    let chain = store::service::audit::verify(&database.service, Some(workspaces[0].tenant_id))
        .await
        .unwrap();
    assert!(chain[0].is_intact());
    assert_eq!(chain[0].entries, 2, "tenant.create and member.add");
    let mut admin = test_database.admin().await;
    let vias: Vec<String> = sqlx::query_scalar(
        "select action || ' ' || (details ->> 'via') from audit.log \
         where tenant_id = $1 order by action",
    )
    .bind(workspaces[0].tenant_id.as_uuid())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(vias, ["member.add sign_up", "tenant.create sign_up"]);

    // The same email again: the same answer, and nothing more is created.
    let mut other = Browser::new(&addr);
    let again = submit_sign_up(&mut other, "ADA@example.com", "Another").await;
    assert_eq!(again.status, 200);
    assert!(again.body.contains("Check your email"));
    assert!(again.set_cookie("__Host-tributary-session").is_none());
    logged_sign_up_notice(credentials.user_id).await;
    assert_eq!(workspace_count(&test_database, "Another").await, 0);
    assert_eq!(
        pending_sign_up_count(&test_database, "ada@example.com").await,
        0,
        "the confirmed sign-up, with its copy of the password hash, is gone"
    );

    // Short passwords and missing workspaces are named.
    let mut fields = sign_up_fields("grace@example.com", "Navy");
    fields[2] = ("password", "short");
    let short = other
        .submit("/auth?mode=sign-up", "/auth/sign-up", &fields)
        .await;
    assert_eq!(short.status, 422);
    assert!(short.body.contains("at least 12 characters"));
    let mut fields = sign_up_fields("grace@example.com", "");
    fields[6] = ("region", "eu");
    let unnamed = other
        .submit("/auth?mode=sign-up", "/auth/sign-up", &fields)
        .await;
    assert_eq!(unnamed.status, 422);
    assert!(
        unnamed.body.contains("Workspace name: must not be empty"),
        "{}",
        unnamed.body
    );
    assert_eq!(
        pending_sign_up_count(&test_database, "grace@example.com").await,
        0
    );
}

/// A response with the given texts replaced by placeholders, the headers that differ by nature
/// (date, length) left out, and cookies named without their random values.
fn normalised(page: &crate::browser::Page, texts: &[(&str, &str)]) -> (u16, Vec<String>, String) {
    let mut body = page.body.clone();
    for (text, placeholder) in texts {
        body = body.replace(text, placeholder);
    }
    let headers = page
        .headers
        .iter()
        .filter(|(name, _)| name != "date" && name != "content-length")
        .map(|(name, value)| match name.as_str() {
            "set-cookie" => format!("{name}: {}", value.split('=').next().unwrap_or_default()),
            _ => format!("{name}: {value}"),
        })
        .collect();
    (page.status, headers, body)
}

#[tokio::test]
async fn sign_up_answers_the_same_whether_or_not_the_address_has_an_account() {
    server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    let existing = member(&database, tenant, "existing@example.com", Role::Owner).await;

    let taken = submit_sign_up(
        &mut Browser::new(&addr),
        "existing@example.com",
        "First Works",
    )
    .await;
    let free = submit_sign_up(
        &mut Browser::new(&addr),
        "newcomer@example.com",
        "Second Works",
    )
    .await;
    assert_eq!((taken.status, free.status), (200, 200));
    assert_eq!(
        normalised(
            &taken,
            &[
                ("existing@example.com", "ADDRESS"),
                ("First Works", "WORKSPACE")
            ]
        ),
        normalised(
            &free,
            &[
                ("newcomer@example.com", "ADDRESS"),
                ("Second Works", "WORKSPACE")
            ]
        ),
        "the same status, headers and page but for the address and workspace typed in"
    );

    // The existing account is told (here, with no mail server, a line naming it by id), with no
    // link; nothing is recorded or created.
    let notice = logged_sign_up_notice(existing).await;
    assert!(!notice.contains("link="), "{notice}");
    assert_eq!(
        pending_sign_up_count(&test_database, "existing@example.com").await,
        0
    );
    assert_eq!(workspace_count(&test_database, "First Works").await, 0);
    assert_eq!(
        store::accounts::memberships(&database.app, existing)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        sign_up_link_now(&database, "existing@example.com")
            .await
            .is_none()
    );

    // The new address: a pending sign-up and its link; no account until the link is used.
    assert!(
        logged_sign_up_link(&database, "newcomer@example.com")
            .await
            .is_some()
    );
    assert_eq!(
        pending_sign_up_count(&test_database, "newcomer@example.com").await,
        1
    );
    assert!(
        store::accounts::credentials(
            &database.app,
            &Email::parse("newcomer@example.com").unwrap()
        )
        .await
        .unwrap()
        .is_none()
    );

    // Neither address nor the password is ever logged.
    let log = log_text();
    for secret in ["existing@example.com", "newcomer@example.com", PASSWORD] {
        assert!(!log.contains(secret), "{secret} was logged");
    }
}

#[tokio::test]
async fn a_sign_up_link_works_once_expires_and_is_not_spent_by_looking() {
    server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;

    // Looking at the link (as a mail scanner does) spends nothing; confirming does, once.
    let mut browser = Browser::new(&addr);
    submit_sign_up(&mut browser, "grace@example.com", "Navy Computing").await;
    let link = logged_sign_up_link(&database, "grace@example.com")
        .await
        .unwrap();
    assert_eq!(Browser::new(&addr).get(&link).await.status, 200);
    assert_eq!(Browser::new(&addr).get(&link).await.status, 200);
    let done = browser.submit(&link, &link, &[]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let mut again = Browser::new(&addr);
    let spent = again.submit("/auth?mode=sign-up", &link, &[]).await;
    assert_eq!(spent.status, 404);
    assert!(
        spent
            .body
            .contains("This link has expired or was already used. Sign up again.")
    );
    assert!(spent.set_cookie("__Host-tributary-session").is_none());
    let shown = again.get(&link).await;
    assert_eq!(shown.status, 404);
    assert!(shown.body.contains("expired or was already used"));
    assert_eq!(workspace_count(&test_database, "Navy Computing").await, 1);

    // Two confirmations at once: one workspace, one signed-in browser.
    submit_sign_up(
        &mut Browser::new(&addr),
        "hopper@example.com",
        "Cobol Works",
    )
    .await;
    let link = logged_sign_up_link(&database, "hopper@example.com")
        .await
        .unwrap();
    let mut first = Browser::new(&addr);
    let mut second = Browser::new(&addr);
    let first_csrf = first.get(&link).await.csrf();
    let second_csrf = second.get(&link).await.csrf();
    let first_fields = [("csrf", first_csrf.as_str())];
    let second_fields = [("csrf", second_csrf.as_str())];
    let (one, two) = tokio::join!(
        first.post(&link, &first_fields),
        second.post(&link, &second_fields),
    );
    let mut statuses = [one.status, two.status];
    statuses.sort();
    assert_eq!(statuses, [303, 404]);
    assert_eq!(workspace_count(&test_database, "Cobol Works").await, 1);

    // Past its 24 hours the link no longer works, and creates nothing.
    submit_sign_up(&mut Browser::new(&addr), "lin@example.com", "Late Works").await;
    let link = logged_sign_up_link(&database, "lin@example.com")
        .await
        .unwrap();
    let mut admin = test_database.admin().await;
    let hours: f64 = sqlx::query_scalar(
        "select extract(epoch from expires_at - created_at)::float8 / 3600 \
         from control.pending_signups where email = 'lin@example.com'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!((hours - 24.0).abs() < 0.01, "{hours}");
    sqlx::query(
        "update control.pending_signups set expires_at = now() - interval '1 second' \
         where email = 'lin@example.com'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let mut late = Browser::new(&addr);
    assert_eq!(late.get(&link).await.status, 404);
    assert_eq!(
        late.submit("/auth?mode=sign-up", &link, &[]).await.status,
        404
    );
    assert_eq!(workspace_count(&test_database, "Late Works").await, 0);

    // An address that got an account after signing up: the link is refused, nothing created.
    submit_sign_up(&mut Browser::new(&addr), "race@example.com", "Race Works").await;
    let link = logged_sign_up_link(&database, "race@example.com")
        .await
        .unwrap();
    let racer = Email::parse("race@example.com").unwrap();
    store::control::create_user(&database.app, Actor::System("test"), &racer, "Racer")
        .await
        .unwrap();
    let mut raced = Browser::new(&addr);
    let refused = raced.submit(&link, &link, &[]).await;
    assert_eq!(refused.status, 404);
    assert!(refused.body.contains("expired or was already used"));
    assert!(refused.set_cookie("__Host-tributary-session").is_none());
    assert_eq!(workspace_count(&test_database, "Race Works").await, 0);

    // The scheduler's pruning removes pending sign-ups a day past their expiry.
    sqlx::query(
        "update control.pending_signups set expires_at = now() - interval '2 days' \
         where email = 'lin@example.com'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let report = store::accounts::prune(&database.app).await.unwrap();
    assert_eq!(report.pending_sign_ups, 1, "{report:?}");
    assert_eq!(
        pending_sign_up_count(&test_database, "lin@example.com").await,
        0
    );
    assert_eq!(
        pending_sign_up_count(&test_database, "race@example.com").await,
        1
    );
}

#[tokio::test]
async fn sign_up_is_throttled_per_client_and_per_address() {
    server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, "existing@example.com", Role::Owner).await;
    let mut browser = Browser::new(&addr);

    // Three sign-ups per address per window, whether or not it has an account: each one mails
    // the address, so nobody can bury a stranger in mail.
    for email in ["existing@example.com", "victim@example.com"] {
        for _ in 0..3 {
            assert_eq!(
                submit_sign_up(&mut browser, email, "Spam").await.status,
                200
            );
        }
        let refused = submit_sign_up(&mut browser, email, "Spam").await;
        assert_eq!(refused.status, 429, "{email}");
        assert!(refused.body.contains("Too many attempts"));
        assert_eq!(refused.header("retry-after"), Some("900"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pending_sign_up_count(&test_database, "victim@example.com").await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "three sign-ups recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        pending_sign_up_count(&test_database, "victim@example.com").await,
        3
    );

    // Ten sign-up attempts per client address per window, valid or not; the eleventh is
    // refused before the form is even read. (Eight so far.)
    let mut fields = sign_up_fields("someone@example.com", "Else");
    fields[2] = ("password", "short");
    for _ in 0..2 {
        assert_eq!(
            browser
                .submit("/auth?mode=sign-up", "/auth/sign-up", &fields)
                .await
                .status,
            422
        );
    }
    let refused = submit_sign_up(&mut browser, "someone@example.com", "Else").await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        pending_sign_up_count(&test_database, "someone@example.com").await,
        0
    );
}

#[tokio::test]
async fn sign_in_fails_generically_rotates_sessions_and_sign_out_ends_them_on_the_server() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    let user = member(&database, tenant, "ada@example.com", Role::Admin).await;

    // Wrong password and unknown account look the same.
    let mut browser = Browser::new(&addr);
    let wrong = sign_in(&mut browser, "ada@example.com", "not the password").await;
    let unknown = sign_in(&mut browser, "nobody@example.com", PASSWORD).await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    let message = "That email and password do not match an account.";
    assert!(wrong.body.contains(message) && unknown.body.contains(message));
    assert!(wrong.set_cookie("__Host-tributary-session").is_none());
    assert!(!wrong.body.contains("not the password"));

    // Signing in: a session, a new anti-forgery cookie, a trusted-device cookie.
    let first = sign_in(&mut browser, "ADA@example.com", PASSWORD).await;
    assert_eq!(first.status, 303);
    assert_eq!(first.header("location"), Some("/app"));
    assert_cookie_attributes(&first, "sign-in");
    let first_session = browser.cookies["__Host-tributary-session"].clone();
    assert_eq!(first_session.len(), 64, "256 random bits, hex");
    assert!(
        first
            .set_cookie("__Host-tributary-device")
            .unwrap()
            .contains("Max-Age=7776000")
    );
    assert_eq!(browser.get("/app/overview").await.status, 200);

    // Signing in again from the same browser rotates the session; the old one is dead.
    let second = sign_in(&mut browser, "ada@example.com", PASSWORD).await;
    assert_eq!(second.status, 303);
    let second_session = browser.cookies["__Host-tributary-session"].clone();
    assert_ne!(first_session, second_session);
    let mut stale = browser.clone();
    stale
        .cookies
        .insert("__Host-tributary-session".into(), first_session);
    let refused = stale.get("/app/overview").await;
    assert_eq!(refused.status, 303);
    assert_eq!(refused.header("location"), Some("/auth?next=/app/overview"));

    // `next` is followed only inside the app.
    let mut elsewhere = Browser::new(&addr);
    let page = elsewhere
        .submit(
            "/auth?next=/app/tenants",
            "/auth/sign-in",
            &[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("next", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(page.header("location"), Some("/app"));
    let page = elsewhere
        .submit(
            "/auth",
            "/auth/sign-in",
            &[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("next", "/app/tenants"),
            ],
        )
        .await;
    assert_eq!(page.header("location"), Some("/app/tenants"));

    // Signing out ends the session on the server: replaying its cookie gets nowhere.
    let kept = browser.cookies["__Host-tributary-session"].clone();
    let out = browser.submit("/app/overview", "/auth/sign-out", &[]).await;
    assert_eq!(out.status, 303);
    assert!(
        out.set_cookie("__Host-tributary-session")
            .unwrap()
            .contains("Max-Age=0")
    );
    let mut replay = Browser::new(&addr);
    replay
        .cookies
        .insert("__Host-tributary-session".into(), kept);
    assert_eq!(replay.get("/app/overview").await.status, 303);

    // Sign out everywhere ends every session of the account, in every browser.
    let mut phone = Browser::new(&addr);
    assert_eq!(
        sign_in(&mut phone, "ada@example.com", PASSWORD)
            .await
            .status,
        303
    );
    let mut laptop = Browser::new(&addr);
    assert_eq!(
        sign_in(&mut laptop, "ada@example.com", PASSWORD)
            .await
            .status,
        303
    );
    assert!(
        store::accounts::live_session_count(&database.app, user)
            .await
            .unwrap()
            >= 2
    );
    let everywhere = laptop
        .submit("/app/overview", "/auth/sign-out-everywhere", &[])
        .await;
    assert_eq!(everywhere.status, 303);
    assert_eq!(
        store::accounts::live_session_count(&database.app, user)
            .await
            .unwrap(),
        0
    );
    assert_eq!(phone.get("/app/overview").await.status, 303);
    assert_eq!(elsewhere.get("/app/overview").await.status, 303);
}

#[tokio::test]
async fn sessions_end_after_the_idle_and_the_absolute_timeout() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, "ada@example.com", Role::Viewer).await;
    let mut admin = test_database.admin().await;

    let mut browser = Browser::new(&addr);
    sign_in(&mut browser, "ada@example.com", PASSWORD).await;
    assert_eq!(browser.get("/app/overview").await.status, 200);
    // Use extends the idle deadline, never past the absolute one (30 minutes, 12 hours).
    let (idle, absolute): (f64, f64) = sqlx::query_as(
        "select extract(epoch from idle_expires_at - now())::float8, \
                extract(epoch from absolute_expires_at - created_at)::float8 \
         from control.auth_sessions where revoked_at is null",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!((1700.0..=1800.0).contains(&idle), "{idle}");
    assert!((absolute - 43_200.0).abs() < 1.0, "{absolute}");
    sqlx::query(
        "update control.auth_sessions set absolute_expires_at = now() + interval '1 minute'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    assert_eq!(browser.get("/app/overview").await.status, 200);
    let idle: f64 = sqlx::query_scalar(
        "select extract(epoch from idle_expires_at - now())::float8 from control.auth_sessions",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(
        idle <= 60.0,
        "idle extension capped by the absolute timeout: {idle}"
    );

    // Idle past its deadline: signed out.
    sqlx::query(
        "update control.auth_sessions set idle_expires_at = now() - interval '1 second', \
                 absolute_expires_at = now() + interval '1 hour'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    assert_eq!(browser.get("/app/overview").await.status, 303);

    // Absolute deadline passed while still in use: signed out.
    sign_in(&mut browser, "ada@example.com", PASSWORD).await;
    assert_eq!(browser.get("/app/overview").await.status, 200);
    sqlx::query(
        "update control.auth_sessions set absolute_expires_at = now() - interval '1 second' \
                 where revoked_at is null",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    assert_eq!(browser.get("/app/overview").await.status, 303);

    // The scheduler's pruning removes sessions, counters and trusted browsers a day past use,
    // and nothing current.
    let mut current = Browser::new(&addr);
    sign_in(&mut current, "ada@example.com", PASSWORD).await;
    sqlx::query(
        "update control.auth_sessions set absolute_expires_at = now() - interval '2 days' \
         where absolute_expires_at < now()",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("update control.auth_throttle set window_started_at = now() - interval '2 days'")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("update control.trusted_devices set expires_at = now() - interval '1 second'")
        .execute(&mut admin)
        .await
        .unwrap();
    let report = store::accounts::prune(&database.app).await.unwrap();
    assert!(
        report.sessions >= 1 && report.attempt_counters >= 1,
        "{report:?}"
    );
    assert!(report.trusted_devices >= 1, "{report:?}");
    assert_eq!(
        current.get("/app/overview").await.status,
        200,
        "the live session stays"
    );
    assert_eq!(
        store::accounts::prune(&database.app).await.unwrap(),
        Default::default()
    );
}

#[tokio::test]
async fn signing_in_rehashes_a_password_stored_with_older_parameters() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    let user = member(&database, tenant, "ada@example.com", Role::Owner).await;
    let legacy = web::auth::password::hash_with_legacy_parameters(PASSWORD);
    store::accounts::set_password_hash(&database.app, user, &legacy)
        .await
        .unwrap();
    assert!(legacy.contains("m=8192,t=1,p=1"));

    let mut browser = Browser::new(&addr);
    assert_eq!(
        sign_in(&mut browser, "ada@example.com", "wrong password!")
            .await
            .status,
        401
    );
    assert_eq!(
        stored_hash(&database, "ada@example.com").await,
        legacy,
        "no rehash on failure"
    );
    assert_eq!(
        sign_in(&mut browser, "ada@example.com", PASSWORD)
            .await
            .status,
        303
    );
    let rehashed = stored_hash(&database, "ada@example.com").await;
    assert!(
        rehashed.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{rehashed}"
    );
    // And the new hash works.
    assert_eq!(
        sign_in(&mut Browser::new(&addr), "ada@example.com", PASSWORD)
            .await
            .status,
        303
    );
    assert_eq!(
        stored_hash(&database, "ada@example.com").await,
        rehashed,
        "rehashed once"
    );
}

#[tokio::test]
async fn every_state_change_without_a_valid_token_is_refused() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, "ada@example.com", Role::Owner).await;
    let mut browser = Browser::new(&addr);
    assert_eq!(
        sign_in(&mut browser, "ada@example.com", PASSWORD)
            .await
            .status,
        303
    );
    let token = browser.get("/app/overview").await.csrf();

    let posts: [(&str, Vec<(&str, &str)>); 7] = [
        (
            "/auth/sign-in",
            vec![("email", "ada@example.com"), ("password", PASSWORD)],
        ),
        ("/auth/sign-up", sign_up_fields("new@example.com", "New")),
        (
            "/auth/sign-up/0000000000000000000000000000000000000000000000000000000000000000",
            vec![],
        ),
        ("/auth/sign-out", vec![]),
        ("/auth/sign-out-everywhere", vec![]),
        (
            "/app/workspace",
            vec![("tenant_id", "00000000-0000-0000-0000-000000000000")],
        ),
        ("/contact", vec![("name", "x")]),
    ];
    for (path, fields) in &posts {
        // No token.
        let page = browser.post(path, fields).await;
        assert_eq!(page.status, 403, "{path} without a token");
        assert!(page.body.contains("This form has expired"), "{path}");
        // A wrong token.
        let mut wrong = fields.clone();
        wrong.push((
            "csrf",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ));
        assert_eq!(
            browser.post(path, &wrong).await.status,
            403,
            "{path} with a wrong token"
        );
        // The right token in the header works as well as the field (for htmx); refused when the
        // request comes from another site.
        let mut cross = browser.clone();
        cross.extra_headers = vec![
            ("X-CSRF-Token".into(), token.clone()),
            ("Origin".into(), "https://evil.example".into()),
        ];
        assert_eq!(
            cross.post(path, fields).await.status,
            403,
            "{path} cross-origin"
        );
    }
    // `Origin: null` (what browsers send under `Referrer-Policy: no-referrer`) passes only with
    // a same-origin `Sec-Fetch-Site`; another subdomain (`same-site`) does not.
    let fields = [("csrf", token.as_str())];
    for (headers, expected) in [
        (vec![("Origin", "null")], 403),
        (
            vec![("Origin", "null"), ("Sec-Fetch-Site", "same-site")],
            403,
        ),
        (vec![("Sec-Fetch-Site", "same-site")], 403),
        (
            vec![("Origin", "null"), ("Sec-Fetch-Site", "same-origin")],
            404,
        ),
    ] {
        let mut client = browser.clone();
        client.extra_headers = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let page = client
            .post(
                "/app/workspace",
                &[
                    fields[0],
                    ("tenant_id", "00000000-0000-0000-0000-000000000000"),
                ],
            )
            .await;
        // 404: past the guard, refused by the switch itself (no such workspace).
        assert_eq!(page.status, expected, "{headers:?}");
    }

    // Nothing happened: still signed in, still one account.
    assert_eq!(browser.get("/app/overview").await.status, 200);
    assert!(
        store::accounts::credentials(&database.app, &Email::parse("new@example.com").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // GET never changes state: sign-out is POST only.
    assert_eq!(browser.get("/auth/sign-out").await.status, 405);
    assert_eq!(browser.get("/app/overview").await.status, 200);
}

#[tokio::test]
async fn throttling_bounds_guesses_but_cannot_lock_the_real_user_out() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, "ada@example.com", Role::Owner).await;

    // The real user signed in once from her laptop, which is now trusted.
    let mut laptop = Browser::new(&addr);
    assert_eq!(
        sign_in(&mut laptop, "ada@example.com", PASSWORD)
            .await
            .status,
        303
    );
    laptop.submit("/app/overview", "/auth/sign-out", &[]).await;
    assert!(laptop.cookies.contains_key("__Host-tributary-device"));

    // An attacker guesses: ten guesses are checked, then every attempt is refused unchecked,
    // even with the right password.
    let mut attacker = Browser::new(&addr);
    let mut checked = 0;
    for guess in 0..15 {
        let page = sign_in(
            &mut attacker,
            "ada@example.com",
            &format!("guess number {guess}"),
        )
        .await;
        match page.status {
            401 => checked += 1,
            429 => {
                assert!(page.body.contains("Too many attempts"));
                assert_eq!(page.header("retry-after"), Some("900"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Ten attempts per account per 15 minutes from untrusted browsers; the real user's own first
    // sign-in above was one of them.
    assert_eq!(checked, 9, "at most ten attempts per account per window");
    let page = sign_in(&mut attacker, "ada@example.com", PASSWORD).await;
    assert_eq!(page.status, 429, "the right password is not even checked");
    // Other browsers without the device cookie are held back as well.
    assert_eq!(
        sign_in(&mut Browser::new(&addr), "ada@example.com", PASSWORD)
            .await
            .status,
        429
    );

    // The real user, on her trusted laptop, still gets in during the attack.
    let page = sign_in(&mut laptop, "ada@example.com", PASSWORD).await;
    assert_eq!(page.status, 303, "no lock-out: {}", page.body);
    assert_eq!(laptop.get("/app/overview").await.status, 200);

    // A device cookie trusted for another account gives no way around the account's limit.
    let other_tenant = crate::api::tenant(&database, "Globex").await;
    member(&database, other_tenant, "mallory@example.com", Role::Owner).await;
    let mut mallory = Browser::new(&addr);
    assert_eq!(
        sign_in(&mut mallory, "mallory@example.com", PASSWORD)
            .await
            .status,
        303
    );
    assert_eq!(
        sign_in(&mut mallory, "ada@example.com", "another guess")
            .await
            .status,
        429
    );
}

/// Everything the server logs in this test process, for tests that read what an operator would
/// (the password reset link, while no mail server is configured).
pub fn server_log() -> &'static std::sync::Mutex<Vec<u8>> {
    use std::sync::{Mutex, OnceLock};

    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Writer(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Writer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Writer(log))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        log
    })
}

/// The newest link logged on a line containing `marker` and `id`.
pub fn logged_link(marker: &str, id: &str, path: &str) -> Option<String> {
    let log = String::from_utf8_lossy(&server_log().lock().unwrap()).into_owned();
    log.lines()
        .filter(|line| line.contains(marker) && line.contains(id))
        .filter_map(|line| {
            let start = line.find(&format!("link={path}"))? + "link=".len();
            let end = line[start..]
                .find(char::is_whitespace)
                .map_or(line.len(), |end| start + end);
            Some(line[start..end].to_owned())
        })
        .next_back()
}

/// The newest reset link logged for `user`.
fn logged_reset_link(user: UserId) -> Option<String> {
    let log = String::from_utf8_lossy(&server_log().lock().unwrap()).into_owned();
    log.lines()
        .filter(|line| line.contains("password reset link") && line.contains(&user.to_string()))
        .filter_map(|line| {
            let start = line.find("link=/auth/reset/")? + "link=".len();
            Some(line[start..start + "/auth/reset/".len() + 64].to_owned())
        })
        .next_back()
}

/// The reset link logged for `user` after the request just answered, other than `previous`:
/// the link is issued in the background, after the answer (within seconds).
async fn next_reset_link(user: UserId, previous: Option<&str>) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(link) = logged_reset_link(user).filter(|link| Some(link.as_str()) != previous) {
            return link;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reset link in the server log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_password_reset_link_works_once_expires_and_ends_every_session() {
    server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    let user = member(&database, tenant, "ada@example.com", Role::Owner).await;
    let mut signed_in = Browser::new(&addr);
    sign_in(&mut signed_in, "ada@example.com", PASSWORD).await;

    // Known and unknown addresses get the same answer; only the known one gets a link.
    let mut browser = Browser::new(&addr);
    let unknown = browser
        .submit(
            "/auth/reset",
            "/auth/reset",
            &[("email", "nobody@example.com")],
        )
        .await;
    let known = browser
        .submit(
            "/auth/reset",
            "/auth/reset",
            &[("email", "ADA@example.com")],
        )
        .await;
    assert_eq!((unknown.status, known.status), (200, 200));
    assert!(
        unknown
            .body
            .contains("If an account exists for that address")
    );
    assert!(known.body.contains("If an account exists for that address"));
    let link = next_reset_link(user, None).await;
    let log = String::from_utf8_lossy(&server_log().lock().unwrap()).into_owned();
    assert!(!log.contains("ada@example.com"), "no address in the log");

    // The link opens the form; a short password is refused without spending the link.
    let form = browser.get(&link).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("Choose a new password"));
    let short = browser.submit(&link, &link, &[("password", "short")]).await;
    assert_eq!(short.status, 422);
    let new_password = "a brand new passphrase";
    let done = browser
        .submit(&link, &link, &[("password", new_password)])
        .await;
    assert_eq!(done.status, 303);
    assert_eq!(done.header("location"), Some("/auth?reset=1"));

    // Used once: the link is spent, every session ended, only the new password works.
    assert_eq!(browser.get(&link).await.status, 404);
    let again = browser
        .submit(
            "/auth/reset",
            &link,
            &[("password", "yet another passphrase")],
        )
        .await;
    assert_eq!(again.status, 404);
    assert!(again.body.contains("expired or was already used"));
    assert_eq!(
        signed_in.get("/app/overview").await.status,
        303,
        "signed out everywhere"
    );
    assert_eq!(
        sign_in(&mut Browser::new(&addr), "ada@example.com", PASSWORD)
            .await
            .status,
        401
    );
    assert_eq!(
        sign_in(&mut Browser::new(&addr), "ada@example.com", new_password)
            .await
            .status,
        303
    );

    // A link past its 30 minutes no longer works.
    browser
        .submit(
            "/auth/reset",
            "/auth/reset",
            &[("email", "ada@example.com")],
        )
        .await;
    let second = next_reset_link(user, Some(&link)).await;
    let mut admin = test_database.admin().await;
    sqlx::query("update control.password_resets set expires_at = now() - interval '1 second'")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(browser.get(&second).await.status, 404);
    let expired = browser
        .submit(
            "/auth/reset",
            &second,
            &[("password", "yet another passphrase")],
        )
        .await;
    assert_eq!(expired.status, 404);
    assert_eq!(
        sign_in(&mut Browser::new(&addr), "ada@example.com", new_password)
            .await
            .status,
        303
    );

    // Three requests per account per window, whoever asks.
    let throttled = browser
        .submit(
            "/auth/reset",
            "/auth/reset",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(throttled.status, 200, "the third request");
    let throttled = browser
        .submit(
            "/auth/reset",
            "/auth/reset",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(throttled.status, 429);
}

/// Whether the app's shell shows the workspace `name` as the current one (a name, or the
/// switcher's choice for a member of several).
pub fn in_workspace(body: &str, name: &str) -> bool {
    body.contains(&format!(r#"<p class="workspace-name">{name}</p>"#))
        || body.contains(&format!(r#"selected>{name} ("#))
}

fn session_end_actions(body: &str) -> Vec<String> {
    body.match_indices(r#"action="/app/sessions/"#)
        .map(|(index, _)| {
            let start = index + r#"action=""#.len();
            let end = body[start..].find('"').unwrap() + start;
            body[start..end].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn members_see_their_own_sessions_under_settings_and_end_one() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, "ada@example.com", Role::Viewer).await;
    let other = crate::api::tenant(&database, "Globex").await;
    member(&database, other, "bob@example.com", Role::Owner).await;

    let mut phone = Browser::new(&addr);
    sign_in(&mut phone, "ada@example.com", PASSWORD).await;
    let mut laptop = Browser::new(&addr);
    sign_in(&mut laptop, "ada@example.com", PASSWORD).await;
    let mut bob = Browser::new(&addr);
    sign_in(&mut bob, "bob@example.com", PASSWORD).await;

    let overview = laptop.get("/app/settings/account").await;
    assert_eq!(overview.body.matches("this browser").count(), 1);
    let ends = session_end_actions(&overview.body);
    assert_eq!(ends.len(), 1, "the other browser's session, not this one's");
    let bobs = session_end_actions(&bob.get("/app/settings/account").await.body);
    assert!(bobs.is_empty());

    // Another account's session cannot be ended from here, even by its id.
    let bob_overview = bob.get("/app/settings/account").await;
    assert!(bob_overview.body.contains("this browser"));
    let mut bob_second = Browser::new(&addr);
    sign_in(&mut bob_second, "bob@example.com", PASSWORD).await;
    let bob_ends = session_end_actions(&bob_second.get("/app/settings/account").await.body);
    assert_eq!(bob_ends.len(), 1);
    let refused = laptop
        .submit("/app/settings/account", &bob_ends[0], &[])
        .await;
    assert_eq!(refused.status, 404);
    assert_eq!(bob.get("/app/settings/account").await.status, 200);

    let ended = laptop.submit("/app/settings/account", &ends[0], &[]).await;
    assert_eq!(ended.status, 303);
    assert_eq!(
        phone.get("/app/settings/account").await.status,
        303,
        "the phone is signed out"
    );
    let after = laptop.get("/app/settings/account?ended=1").await;
    assert!(after.body.contains("The session was ended."));
    assert!(session_end_actions(&after.body).is_empty());
}

/// Someone who can add an account to a workspace (an operator's CLI, an invitation accepted
/// long ago) names it to sort first; the account's next password sign-in still lands where the
/// person last worked — their first workspace until they choose another.
#[tokio::test]
async fn a_password_sign_in_lands_where_the_person_last_worked_never_where_a_name_sorts_first() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let own = crate::api::tenant(&database, "Zephyr Energy").await;
    member(&database, own, "ada@example.com", Role::Owner).await;
    let mut first = signed_in(&addr, "ada@example.com").await;
    let overview = first.get("/app/overview").await;
    assert!(in_workspace(&overview.body, "Zephyr Energy"));

    let lure = crate::api::tenant(&database, "AAA Payroll").await;
    member(&database, lure, "ada@example.com", Role::Admin).await;
    for attempt in 0..2 {
        let mut browser = signed_in(&addr, "ada@example.com").await;
        let overview = browser.get("/app/overview").await;
        assert!(
            in_workspace(&overview.body, "Zephyr Energy")
                && !in_workspace(&overview.body, "AAA Payroll"),
            "sign-in {attempt} landed elsewhere: {}",
            overview.body
        );
        let api = browser.get("/api/v1/workspace").await;
        assert_eq!(api.status, 200);
        assert!(api.body.contains("Zephyr Energy"), "{}", api.body);
    }

    // She chooses the other workspace and works there: her next sign-in lands there.
    let switched = first
        .submit(
            "/app/overview",
            "/app/workspace",
            &[("tenant_id", &lure.to_string())],
        )
        .await;
    assert_eq!(switched.status, 303);
    let mut later = signed_in(&addr, "ada@example.com").await;
    assert!(in_workspace(
        &later.get("/app/overview").await.body,
        "AAA Payroll"
    ));
}

/// The median of `values`.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// How much the difference of the medians of `a` and `b` varies by chance: its standard deviation
/// over bootstrap resamples of both (a fixed pseudo-random sequence, so a run is repeatable from
/// its measurements). It grows with the spread of the measurements and shrinks with their number.
fn median_difference_spread(a: &[f64], b: &[f64]) -> f64 {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |len: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % len as u64) as usize
    };
    let mut differences = Vec::new();
    for _ in 0..2000 {
        let resample_a: Vec<f64> = (0..a.len()).map(|_| a[next(a.len())]).collect();
        let resample_b: Vec<f64> = (0..b.len()).map(|_| b[next(b.len())]).collect();
        differences.push(median(&resample_a) - median(&resample_b));
    }
    let mean = differences.iter().sum::<f64>() / differences.len() as f64;
    let variance = differences
        .iter()
        .map(|difference| (difference - mean).powi(2))
        .sum::<f64>()
        / differences.len() as f64;
    variance.sqrt()
}

/// What an answer shows a client, with what is its own (the anti-forgery token and cookie, the
/// address it typed) taken out: status, the other cookies, the body.
fn shown(page: &crate::browser::Page, email: &str) -> (u16, Vec<String>, String) {
    let csrf_field = r#"name="csrf" value=""#;
    let mut body = page.body.replace(email, "EMAIL");
    let mut from = 0;
    while let Some(start) = body[from..]
        .find(csrf_field)
        .map(|at| from + at + csrf_field.len())
    {
        let end = body[start..].find('"').unwrap() + start;
        body.replace_range(start..end, "CSRF");
        from = start;
    }
    let cookies = page
        .set_cookies()
        .into_iter()
        .filter(|line| !line.starts_with("__Host-tributary-csrf="))
        .map(str::to_owned)
        .collect();
    (page.status, cookies, body)
}

/// One timed form POST from a browser of its own (its own loopback address, so that no
/// throttle counts one try against another): the answer and how long it took, in ms.
async fn timed_post(
    addr: &str,
    client: usize,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> (crate::browser::Page, f64) {
    let mut browser = Browser::new(addr);
    browser.local_ip = Some(std::net::IpAddr::from([
        127,
        1,
        (client / 250) as u8,
        (client % 250 + 1) as u8,
    ]));
    let csrf = browser.get(page).await.csrf();
    let mut fields = fields.to_vec();
    fields.push(("csrf", &csrf));
    let started = std::time::Instant::now();
    let answer = browser.post(action, &fields).await;
    (answer, started.elapsed().as_secs_f64() * 1000.0)
}

/// Whoever asks cannot tell from sign-in or a reset request whether an address has an account:
/// over many tries of each, interleaved, existing and unknown accounts take as long (medians
/// within the spread of the measurements) and get the same answer. Sign-in checks an unknown
/// account's password against a decoy hash; a reset request answers before the account is
/// looked up.
#[tokio::test]
async fn sign_in_and_reset_take_as_long_and_answer_the_same_for_existing_and_unknown_accounts() {
    const MAX_TRIES: usize = 150;
    const ROUNDS: usize = 2;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    let known = |n: usize| format!("known{n:03}@timing.example");
    let unknown = |n: usize| format!("nouser{n:02}@timing.example");
    for n in 0..ROUNDS * MAX_TRIES + 3 {
        member(&database, tenant, &known(n), Role::Viewer).await;
    }
    let mut client = 0;
    let mut next_client = || {
        client += 1;
        client
    };

    // Sign-in costs a password hash (tens of ms), a reset request a few queries: more tries for
    // the smaller difference there is to find.
    for (what, page, action, tries) in [
        ("sign-in", "/auth", "/auth/sign-in", 30),
        ("reset", "/auth/reset", "/auth/reset", 150),
    ] {
        let attempt = |email: String, client: usize| {
            let addr = addr.clone();
            async move {
                let (answer, ms) = timed_post(
                    &addr,
                    client,
                    page,
                    action,
                    &[("email", &email), ("password", "not the password")],
                )
                .await;
                (shown(&answer, &email), ms)
            }
        };
        // Warm up (the decoy hash, the connection pool), untimed, on addresses no round uses.
        for n in ROUNDS * MAX_TRIES..ROUNDS * MAX_TRIES + 3 {
            attempt(known(n), next_client()).await;
            attempt(unknown(n), next_client()).await;
        }
        // A systematic difference shows in every round; a round spoiled by the machine's own
        // noise (other tests share its two cores) is measured again, on fresh addresses, once.
        let mut verdicts = Vec::new();
        for round in 0..ROUNDS {
            let known = |n: usize| known(n + round * MAX_TRIES);
            let (mut existing, mut missing) = (Vec::new(), Vec::new());
            let mut answers = Vec::new();
            for n in 0..tries {
                // Alternate which goes first, so drift over the run weighs on both alike.
                let order = if n % 2 == 0 {
                    [true, false]
                } else {
                    [false, true]
                };
                for exists in order {
                    let email = if exists {
                        known(n)
                    } else {
                        unknown(n + round * MAX_TRIES)
                    };
                    let (answer, ms) = attempt(email, next_client()).await;
                    if exists {
                        existing.push(ms);
                    } else {
                        missing.push(ms);
                    }
                    answers.push((exists, answer));
                }
            }
            let expected_status = if what == "sign-in" { 401 } else { 200 };
            let first = &answers[0].1;
            assert_eq!(first.0, expected_status, "{what}: {}", first.2);
            for (exists, answer) in &answers {
                assert_eq!(
                    answer,
                    first,
                    "{what}: an {} account's answer differs",
                    if *exists { "existing" } else { "unknown" }
                );
            }
            let (existing_median, missing_median) = (median(&existing), median(&missing));
            let difference = (existing_median - missing_median).abs();
            // Allowed: three times the chance variation of that difference (its bootstrap
            // standard deviation), so noise passes and a systematic difference, such as a
            // database write for existing accounts only, does not.
            let allowed = 3.0 * median_difference_spread(&existing, &missing);
            let verdict = format!(
                "{what} round {round}: median {existing_median:.1} ms existing vs \
                 {missing_median:.1} ms unknown over {tries} tries each; difference \
                 {difference:.1} ms, allowed {allowed:.1} ms"
            );
            println!("{verdict}");
            if difference <= allowed {
                verdicts.clear();
                break;
            }
            verdicts.push(format!(
                "{verdict}\nexisting: {existing:?}\nunknown: {missing:?}"
            ));
        }
        assert!(verdicts.is_empty(), "{}", verdicts.join("\n"));
    }
}
