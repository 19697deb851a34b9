//! Mail by SMTP: a small SMTP server started by the test receives the password-reset, sign-up
//! and invitation mails and the notice to an existing account; the test follows their links. With mail configured the links never reach
//! the log; the settings refuse plain text beyond loopback and never print the password.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::Role;
use secrecy::SecretString;
use test_support::TestDatabase;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use web::mail::{MailError, MailSettings, Mailer, SmtpTls};

use crate::auth::{PASSWORD, member, server_log, sign_in};
use crate::browser::Browser;
use crate::serve_with_mail;

/// One message as the sink received it.
#[derive(Debug, Clone)]
struct Received {
    /// What `AUTH PLAIN` carried, decoded: (user, password).
    login: Option<(String, String)>,
    from: String,
    to: Vec<String>,
    /// Headers and body, dot-unstuffed, lines joined with `\n`.
    data: String,
}

/// A minimal SMTP server on a free loopback port: EHLO (offering AUTH PLAIN), AUTH, MAIL,
/// RCPT, DATA, RSET, NOOP, QUIT. It accepts everything and keeps what it got.
struct SmtpSink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl SmtpSink {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, store.clone()));
            }
        });
        Self { addr, received }
    }

    /// Waits for the `n`th message (1-based) to arrive.
    async fn message(&self, n: usize) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(message) = self.received.lock().unwrap().get(n - 1) {
                return message.clone();
            }
            assert!(Instant::now() < deadline, "mail {n} never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn session(stream: tokio::net::TcpStream, store: Arc<Mutex<Vec<Received>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reply = async |text: &str| {
        let _ = write.write_all(format!("{text}\r\n").as_bytes()).await;
    };
    reply("220 sink.test ESMTP").await;
    let mut login = None;
    let mut from = String::new();
    let mut to = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            reply("250-sink.test\r\n250 AUTH PLAIN").await;
        } else if upper.starts_with("HELO") {
            reply("250 sink.test").await;
        } else if upper.starts_with("AUTH PLAIN") {
            let encoded = match line.split_whitespace().nth(2) {
                Some(encoded) => encoded.to_owned(),
                None => {
                    reply("334 ").await;
                    lines.next_line().await.ok().flatten().unwrap_or_default()
                }
            };
            let decoded = base64_decode(&encoded);
            let mut parts = decoded.split(|byte| *byte == 0).skip(1);
            let user = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let password = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            login = Some((user, password));
            reply("235 2.7.0 Authentication successful").await;
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_owned();
            to.clear();
            reply("250 OK").await;
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_owned());
            reply("250 OK").await;
        } else if upper == "DATA" {
            reply("354 End data with <CR><LF>.<CR><LF>").await;
            let mut data = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
                data.push(line.strip_prefix('.').map_or(line.clone(), str::to_owned));
            }
            store.lock().unwrap().push(Received {
                login: login.clone(),
                from: from.clone(),
                to: to.clone(),
                data: data.join("\n"),
            });
            reply("250 OK queued").await;
        } else if upper == "QUIT" {
            reply("221 Bye").await;
            break;
        } else if upper == "RSET" || upper == "NOOP" {
            reply("250 OK").await;
        } else {
            reply("502 Command not implemented").await;
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|byte| *byte != b'=') {
        let Some(value) = ALPHABET.iter().position(|c| *c == byte) else {
            continue;
        };
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// The body of a quoted-printable message, decoded.
fn body_text(message: &Received) -> String {
    let (head, body) = message
        .data
        .split_once("\n\n")
        .expect("headers, then a body");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-transfer-encoding: quoted-printable"),
        "{head}"
    );
    let joined = body.replace("=\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 3 <= bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The path of the first `http://` link in `text` that contains `path`.
fn link_path(text: &str, public_url: &str, path: &str) -> String {
    let start = text
        .find(&format!("{public_url}{path}"))
        .unwrap_or_else(|| panic!("no link to {public_url}{path} in:\n{text}"));
    let link = text[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('.');
    link[public_url.len()..].to_owned()
}

fn settings(sink: &SmtpSink, public_url: &str) -> MailSettings {
    MailSettings {
        host: "127.0.0.1".into(),
        port: Some(sink.addr.port()),
        tls: SmtpTls::None,
        credentials: Some(("tributary".into(), SecretString::from("sink-password-1f4e"))),
        from: "Tributary <no-reply@tributary.test>".into(),
        public_url: public_url.into(),
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&server_log().lock().unwrap()).into_owned()
}

#[tokio::test]
async fn a_reset_link_arrives_by_smtp_works_and_is_never_logged() {
    server_log();
    let sink = SmtpSink::start().await;
    let public_url = "https://tributary.example.test";
    let mailer = Mailer::new(settings(&sink, public_url)).unwrap();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve_with_mail(database.clone(), Some(Arc::new(mailer))).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    let user = member(&database, tenant, "ada@example.com", Role::Owner).await;

    let mut browser = Browser::new(&addr);
    let answer = browser
        .submit(
            "/auth/reset",
            "/auth/reset",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .body
            .contains("If an account exists for that address")
    );
    let unknown = browser
        .submit(
            "/auth/reset",
            "/auth/reset",
            &[("email", "nobody@example.com")],
        )
        .await;
    assert_eq!(unknown.body, answer.body, "the same answer");

    let mail = sink.message(1).await;
    assert_eq!(
        mail.login,
        Some(("tributary".into(), "sink-password-1f4e".into())),
        "the configured credentials are used"
    );
    assert_eq!(mail.from, "<no-reply@tributary.test>");
    assert_eq!(mail.to, ["<ada@example.com>"]);
    assert!(mail.data.contains("Subject: Reset your Tributary password"));
    let text = body_text(&mail);
    let path = link_path(&text, public_url, "/auth/reset/");
    assert!(text.contains("within 30 minutes"));

    // The link is a secret: with mail configured it is nowhere in the log.
    let token = path.trim_start_matches("/auth/reset/");
    assert_eq!(token.len(), 64);
    assert!(!log_text().contains(token), "the reset link was logged");
    // The sending is logged, by account id (once the server has acknowledged the mail).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_text().contains(&format!("id={user}")) {
        assert!(Instant::now() < deadline, "the sent mail was not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Following it resets the password, once.
    let mut follower = Browser::new(&addr);
    let reset = follower
        .submit(&path, &path, &[("password", "a brand new passphrase")])
        .await;
    assert_eq!(reset.status, 303, "{}", reset.body);
    assert_eq!(reset.header("location"), Some("/auth?reset=1"));
    assert_eq!(Browser::new(&addr).get(&path).await.status, 404, "used up");
    let mut signed = Browser::new(&addr);
    assert_eq!(
        sign_in(&mut signed, "ada@example.com", "a brand new passphrase")
            .await
            .status,
        303
    );
    // Nobody else got mail.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_sign_up_link_arrives_by_smtp_works_and_is_never_logged() {
    server_log();
    let sink = SmtpSink::start().await;
    let public_url = "https://tributary.example.test";
    let mailer = Mailer::new(settings(&sink, public_url)).unwrap();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve_with_mail(database.clone(), Some(Arc::new(mailer))).await;

    let mut browser = Browser::new(&addr);
    let sent =
        crate::auth::submit_sign_up(&mut browser, "grace@example.com", "Navy Computing").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.body.contains("Check your email"));

    let mail = sink.message(1).await;
    assert_eq!(mail.to, ["<grace@example.com>"]);
    assert!(
        mail.data
            .contains("Subject: Finish creating your Tributary workspace")
    );
    let text = body_text(&mail);
    assert!(
        text.contains("\"Navy Computing\"") && text.contains("within 24 hours"),
        "{text}"
    );
    let path = link_path(&text, public_url, "/auth/sign-up/");
    let token = path.trim_start_matches("/auth/sign-up/");
    assert_eq!(token.len(), 64);
    assert!(!log_text().contains(token), "the sign-up link was logged");
    // The sending is logged, by the pending sign-up's id.
    let pending = store::accounts::pending_sign_up(&database, token)
        .await
        .unwrap()
        .expect("the link names a pending sign-up");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_text().contains(&format!("id={}", pending.signup_id)) {
        assert!(Instant::now() < deadline, "the sent mail was not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Following it creates the account and workspace and signs in, once.
    let mut follower = Browser::new(&addr);
    let confirm = follower.get(&path).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Create Navy Computing"));
    let done = follower.submit(&path, &path, &[]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.header("location"), Some("/app"));
    let overview = follower.get("/app/overview").await;
    assert!(overview.body.contains("grace@example.com · owner"));
    assert_eq!(Browser::new(&addr).get(&path).await.status, 404, "used up");

    // Signing up again with the address now taken: the same answer; the account is told, with
    // links to sign in and to reset its password, and gets no sign-up link.
    let again = crate::auth::submit_sign_up(
        &mut Browser::new(&addr),
        "grace@example.com",
        "Navy Computing",
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, sent.body, "the same answer");
    let notice = sink.message(2).await;
    assert_eq!(notice.to, ["<grace@example.com>"]);
    assert!(
        notice
            .data
            .contains("Subject: Someone tried to sign up with your address")
    );
    let text = body_text(&notice);
    for path in ["/auth", "/auth/reset"] {
        assert!(text.contains(&format!("{public_url}{path}\n")), "{text}");
    }
    assert!(!text.contains("/auth/sign-up/"), "{text}");
    // Nobody else got mail; neither the address nor the password was logged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received.lock().unwrap().len(), 2);
    let log = log_text();
    assert!(!log.contains("grace@example.com") && !log.contains(PASSWORD));
}

#[tokio::test]
async fn an_invitation_arrives_by_smtp_and_its_link_brings_the_invitee_in() {
    server_log();
    let sink = SmtpSink::start().await;
    let public_url = "http://127.0.0.1:9";
    let mailer = Mailer::new(settings(&sink, public_url)).unwrap();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve_with_mail(database.clone(), Some(Arc::new(mailer))).await;
    let tenant = crate::api::tenant(&database, "Acme Charging").await;
    member(&database, tenant, "owner@acme.example.com", Role::Owner).await;
    let mut owner = Browser::new(&addr);
    sign_in(&mut owner, "owner@acme.example.com", PASSWORD).await;

    let invited = owner
        .submit(
            "/app/settings",
            "/app/settings/invitations",
            &[("email", "grace@example.com"), ("role", "operator")],
        )
        .await;
    assert_eq!(
        invited.header("location"),
        Some("/app/settings?done=invited#members-heading")
    );
    let mail = sink.message(1).await;
    assert_eq!(mail.to, ["<grace@example.com>"]);
    assert!(
        mail.data
            .contains("Subject: Your invitation to a Tributary workspace")
    );
    let text = body_text(&mail);
    assert!(
        text.contains("\"Acme Charging\"") && text.contains("as operator"),
        "{text}"
    );
    let path = link_path(&text, public_url, "/auth/invitation/");
    let token = path.trim_start_matches("/auth/invitation/");
    assert!(
        !log_text().contains(token),
        "the invitation link was logged"
    );

    let mut grace = Browser::new(&addr);
    let page = grace.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Join Acme Charging"));
    let joined = grace
        .submit(
            &path,
            &path,
            &[("display_name", "Grace"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(joined.status, 303, "{}", joined.body);
    let overview = grace.get("/app/overview").await;
    assert!(overview.body.contains("grace@example.com · operator"));
}

fn plain(host: &str, tls: SmtpTls) -> MailSettings {
    MailSettings {
        host: host.into(),
        port: None,
        tls,
        credentials: Some(("mailer".into(), SecretString::from("hunter2-secret"))),
        from: "Tributary <no-reply@example.com>".into(),
        public_url: "https://tributary.example.com/".into(),
    }
}

/// (Async: a mailer's connection pool needs the runtime.)
#[tokio::test]
async fn plain_text_smtp_is_refused_beyond_loopback_and_settings_are_checked() {
    for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
        assert!(Mailer::new(plain(host, SmtpTls::None)).is_ok(), "{host}");
    }
    for host in ["mail.example.com", "10.0.0.5"] {
        assert!(
            matches!(
                Mailer::new(plain(host, SmtpTls::None)),
                Err(MailError::PlainTextToRemoteHost)
            ),
            "{host}"
        );
    }
    assert!(Mailer::new(plain("mail.example.com", SmtpTls::StartTls)).is_ok());
    assert!(Mailer::new(plain("mail.example.com", SmtpTls::Tls)).is_ok());
    let mut bad = plain("127.0.0.1", SmtpTls::None);
    bad.from = "not a mailbox".into();
    assert!(matches!(Mailer::new(bad), Err(MailError::BadSender)));
    let mut bad = plain("127.0.0.1", SmtpTls::None);
    bad.public_url = "tributary.example.com".into();
    assert!(matches!(Mailer::new(bad), Err(MailError::BadPublicUrl)));
    assert!(matches!(
        "ssl".parse::<SmtpTls>(),
        Err(MailError::UnknownTlsMode)
    ));
    let mailer = Mailer::new(plain("127.0.0.1", SmtpTls::None)).unwrap();
    assert_eq!(
        mailer.link("/auth/reset/abc"),
        "https://tributary.example.com/auth/reset/abc"
    );
    let shown = format!("{:?} {mailer:?}", plain("127.0.0.1", SmtpTls::None));
    assert!(!shown.contains("hunter2"), "{shown}");
}
