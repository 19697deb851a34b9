//! Mail by SMTP: a small SMTP server started by the test receives the password-reset, sign-up
//! and invitation mails and the notice to an existing account; the test follows their links.
//! With mail configured the links never reach the log; the settings refuse plain text beyond
//! loopback and never print the password. Over real TLS (STARTTLS, and TLS from the first byte)
//! with a certificate from a test CA the mailer is given as `ca_file`: the link arrives; a
//! certificate the mailer does not trust, or a server that does not offer STARTTLS, gets
//! nothing, not even the login.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::{Email, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::SecretString;
use test_support::TestDatabase;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use web::mail::{MailError, MailSettings, Mailer, SmtpTls};

use crate::auth::{PASSWORD, member, server_log, sign_in};
use crate::browser::Browser;
use crate::serve_with_mail;

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// What `AUTH PLAIN` carried, decoded: (user, password).
    login: Option<(String, String)>,
    from: String,
    pub to: Vec<String>,
    /// Headers and body, dot-unstuffed, lines joined with `\n`.
    pub data: String,
    /// Whether it came over TLS.
    encrypted: bool,
}

/// How the sink's connections are protected.
#[derive(Clone)]
enum SinkTls {
    /// Plain text, offering no STARTTLS.
    None,
    /// Plain text, offering STARTTLS with this certificate.
    StartTls(TlsAcceptor),
    /// TLS from the first byte (SMTPS, port 465 style).
    Implicit(TlsAcceptor),
}

/// What a sink has seen: the messages, and the verb of every command with whether it came over
/// TLS, to show what a refused client did (not) send.
#[derive(Default)]
struct Seen {
    received: Mutex<Vec<Received>>,
    commands: Mutex<Vec<(String, bool)>>,
}

/// A minimal SMTP server on a free loopback port: EHLO (offering AUTH PLAIN, and STARTTLS when
/// it has a certificate for it), STARTTLS, AUTH, MAIL, RCPT, DATA, RSET, NOOP, QUIT. It accepts
/// everything and keeps what it got.
pub struct SmtpSink {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(SinkTls::None).await
    }

    async fn start_with(tls: SinkTls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, tls.clone(), shared.clone()));
            }
        });
        Self { addr, seen }
    }

    fn received(&self) -> Vec<Received> {
        self.seen.received.lock().unwrap().clone()
    }

    fn commands(&self) -> Vec<(String, bool)> {
        self.seen.commands.lock().unwrap().clone()
    }

    /// Waits for the `n`th message (1-based) to arrive.
    pub async fn message(&self, n: usize) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(message) = self.received().get(n - 1) {
                return message.clone();
            }
            assert!(Instant::now() < deadline, "mail {n} never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One client: TLS first when implicit, then the SMTP dialogue, upgraded in place by STARTTLS.
/// A client that refuses the certificate ends the handshake, and with it the connection.
async fn connection(tcp: TcpStream, tls: SinkTls, seen: Arc<Seen>) {
    let (mut stream, mut encrypted): (Box<dyn Stream>, bool) = match &tls {
        SinkTls::Implicit(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => (Box::new(stream), true),
            Err(_) => return,
        },
        SinkTls::None | SinkTls::StartTls(_) => (Box::new(tcp), false),
    };
    let mut greet = true;
    loop {
        let starttls = match &tls {
            SinkTls::StartTls(acceptor) if !encrypted => Some(acceptor),
            _ => None,
        };
        let Some(plain) = session(stream, greet, starttls.is_some(), encrypted, &seen).await else {
            return;
        };
        let Some(acceptor) = starttls else { return };
        match acceptor.accept(plain).await {
            Ok(upgraded) => stream = Box::new(upgraded),
            Err(_) => return,
        }
        // After STARTTLS the client starts over with EHLO, without a new greeting.
        (encrypted, greet) = (true, false);
    }
}

/// The SMTP dialogue until QUIT or the end of the connection (`None`), or until STARTTLS
/// (`Some`: the connection, to be upgraded).
async fn session(
    stream: Box<dyn Stream>,
    greet: bool,
    offer_starttls: bool,
    encrypted: bool,
    seen: &Seen,
) -> Option<Box<dyn Stream>> {
    let mut stream = BufReader::new(stream);
    async fn reply(stream: &mut BufReader<Box<dyn Stream>>, text: &str) {
        let _ = stream.write_all(format!("{text}\r\n").as_bytes()).await;
    }
    async fn next_line(stream: &mut BufReader<Box<dyn Stream>>) -> Option<String> {
        let mut line = String::new();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
        }
    }
    if greet {
        reply(&mut stream, "220 sink.test ESMTP").await;
    }
    let mut login = None;
    let mut from = String::new();
    let mut to = Vec::new();
    while let Some(line) = next_line(&mut stream).await {
        let upper = line.to_ascii_uppercase();
        let verb = upper
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        seen.commands.lock().unwrap().push((verb, encrypted));
        if upper.starts_with("EHLO") {
            let extensions = if offer_starttls {
                "250-sink.test\r\n250-STARTTLS\r\n250 AUTH PLAIN"
            } else {
                "250-sink.test\r\n250 AUTH PLAIN"
            };
            reply(&mut stream, extensions).await;
        } else if upper == "STARTTLS" && offer_starttls {
            reply(&mut stream, "220 2.0.0 Ready to start TLS").await;
            assert!(stream.buffer().is_empty(), "nothing may follow STARTTLS");
            return Some(stream.into_inner());
        } else if upper.starts_with("HELO") {
            reply(&mut stream, "250 sink.test").await;
        } else if upper.starts_with("AUTH PLAIN") {
            let encoded = match line.split_whitespace().nth(2) {
                Some(encoded) => encoded.to_owned(),
                None => {
                    reply(&mut stream, "334 ").await;
                    next_line(&mut stream).await.unwrap_or_default()
                }
            };
            let decoded = base64_decode(&encoded);
            let mut parts = decoded.split(|byte| *byte == 0).skip(1);
            let user = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let password = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            login = Some((user, password));
            reply(&mut stream, "235 2.7.0 Authentication successful").await;
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_owned();
            to.clear();
            reply(&mut stream, "250 OK").await;
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_owned());
            reply(&mut stream, "250 OK").await;
        } else if upper == "DATA" {
            reply(&mut stream, "354 End data with <CR><LF>.<CR><LF>").await;
            let mut data = Vec::new();
            while let Some(line) = next_line(&mut stream).await {
                if line == "." {
                    break;
                }
                data.push(line.strip_prefix('.').map_or(line.clone(), str::to_owned));
            }
            seen.received.lock().unwrap().push(Received {
                login: login.clone(),
                from: from.clone(),
                to: to.clone(),
                data: data.join("\n"),
                encrypted,
            });
            reply(&mut stream, "250 OK queued").await;
        } else if upper == "QUIT" {
            reply(&mut stream, "221 Bye").await;
            return None;
        } else if upper == "RSET" || upper == "NOOP" {
            reply(&mut stream, "250 OK").await;
        } else {
            reply(&mut stream, "502 Command not implemented").await;
        }
    }
    None
}

/// A certificate authority of the test's own, as a company's internal CA would be.
struct TestCa {
    certificate: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).unwrap();
        Self {
            certificate: certificate.der().clone(),
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A mail server's TLS with a certificate for `names` from this CA.
    fn server(&self, names: &[&str]) -> TlsAcceptor {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names = names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone(), self.certificate.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    /// The CA's certificate in a PEM file, as an operator would give it (`smtp_ca_file`).
    fn pem_file(&self, directory: &tempfile::TempDir) -> PathBuf {
        let path = directory.path().join("smtp-ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
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

pub fn settings(sink: &SmtpSink, public_url: &str) -> MailSettings {
    MailSettings {
        host: "127.0.0.1".into(),
        port: Some(sink.addr.port()),
        tls: SmtpTls::None,
        ca_file: None,
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
    assert_eq!(sink.received().len(), 1);
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
    let pending = store::accounts::pending_sign_up(&database.app, token)
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
    assert_eq!(sink.received().len(), 2);
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
        ca_file: None,
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

/// Settings for a sink over TLS at 127.0.0.1 (the name its certificate must hold), trusting
/// the authorities in `ca_file` besides the public roots.
fn over_tls(sink: &SmtpSink, tls: SmtpTls, ca_file: Option<PathBuf>) -> MailSettings {
    MailSettings {
        tls,
        ca_file,
        ..settings(sink, "https://tributary.example.test")
    }
}

/// The error and its sources, as one line.
fn chain(error: &MailError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// A reset requested in the app arrives over `tls` from a server whose certificate the test CA
/// issued; its link works. Everything after the greeting and the upgrade went encrypted.
async fn a_reset_link_arrives_over(tls: SmtpTls, address: &str) {
    server_log();
    let ca = TestCa::new("Tributary test mail CA");
    let acceptor = ca.server(&["localhost", "127.0.0.1"]);
    let sink = SmtpSink::start_with(match tls {
        SmtpTls::StartTls => SinkTls::StartTls(acceptor),
        _ => SinkTls::Implicit(acceptor),
    })
    .await;
    let directory = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(over_tls(&sink, tls, Some(ca.pem_file(&directory)))).unwrap();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve_with_mail(database.clone(), Some(Arc::new(mailer))).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, address, Role::Owner).await;

    let answer = Browser::new(&addr)
        .submit("/auth/reset", "/auth/reset", &[("email", address)])
        .await;
    assert_eq!(answer.status, 200);
    let mail = sink.message(1).await;
    assert!(mail.encrypted, "{tls:?}: the mail came over TLS");
    assert_eq!(mail.to, [format!("<{address}>")]);
    assert_eq!(
        mail.login,
        Some(("tributary".into(), "sink-password-1f4e".into()))
    );
    let in_clear: Vec<String> = sink
        .commands()
        .into_iter()
        .filter(|(_, encrypted)| !encrypted)
        .map(|(verb, _)| verb)
        .collect();
    let expected: &[&str] = match tls {
        SmtpTls::StartTls => &["EHLO", "STARTTLS"],
        _ => &[],
    };
    assert_eq!(in_clear, expected, "{tls:?}: only these went in plain text");

    let path = link_path(
        &body_text(&mail),
        "https://tributary.example.test",
        "/auth/reset/",
    );
    let reset = Browser::new(&addr)
        .submit(&path, &path, &[("password", "a brand new passphrase")])
        .await;
    assert_eq!(reset.status, 303, "{}", reset.body);
    let mut signed = Browser::new(&addr);
    assert_eq!(
        sign_in(&mut signed, address, "a brand new passphrase")
            .await
            .status,
        303
    );
}

#[tokio::test]
async fn a_reset_link_arrives_over_starttls_from_a_server_the_ca_file_vouches_for() {
    a_reset_link_arrives_over(SmtpTls::StartTls, "starttls-reader@example.com").await;
}

#[tokio::test]
async fn a_reset_link_arrives_over_tls_from_the_first_byte_from_a_server_the_ca_file_vouches_for() {
    a_reset_link_arrives_over(SmtpTls::Tls, "smtps-reader@example.com").await;
}

#[tokio::test]
async fn a_server_whose_certificate_is_not_trusted_gets_nothing() {
    server_log();
    let trusted = TestCa::new("Tributary test mail CA");
    let stranger = TestCa::new("Somebody else's CA");
    let directory = tempfile::tempdir().unwrap();
    let ca_file = trusted.pem_file(&directory);
    let to = Email::parse("nobody-gets-this@example.com").unwrap();

    // A certificate from another CA, from a trusted CA for another name, and from the test CA
    // with no ca_file (the public roots alone do not vouch for it): refused, over STARTTLS and
    // over TLS from the first byte, before anything is sent, the login included.
    let cases = [
        (
            "another CA",
            stranger.server(&["127.0.0.1"]),
            Some(ca_file.clone()),
        ),
        (
            "another name",
            trusted.server(&["mail.elsewhere.test"]),
            Some(ca_file.clone()),
        ),
        ("no ca_file", trusted.server(&["127.0.0.1"]), None),
    ];
    for (what, acceptor, ca_file) in cases {
        for tls in [SmtpTls::StartTls, SmtpTls::Tls] {
            let sink = SmtpSink::start_with(match tls {
                SmtpTls::StartTls => SinkTls::StartTls(acceptor.clone()),
                _ => SinkTls::Implicit(acceptor.clone()),
            })
            .await;
            let mailer = Mailer::new(over_tls(&sink, tls, ca_file.clone())).unwrap();
            let error = mailer
                .send(
                    &to,
                    "A secret",
                    "https://tributary.example.test/auth/reset/x".into(),
                )
                .await
                .expect_err(what);
            let text = chain(&error);
            assert!(
                text.contains("invalid peer certificate"),
                "{what} over {tls:?}: {text}"
            );
            assert!(sink.received().is_empty(), "{what} over {tls:?}");
            let commands: Vec<String> = sink.commands().into_iter().map(|(verb, _)| verb).collect();
            let expected: &[&str] = match tls {
                SmtpTls::StartTls => &["EHLO", "STARTTLS"],
                _ => &[],
            };
            assert_eq!(
                commands, expected,
                "{what} over {tls:?}: nothing else was sent"
            );
        }
    }

    // In the app: the reset is answered as usual, the failure is logged by account id, without
    // the link or the address.
    let sink = SmtpSink::start_with(SinkTls::StartTls(stranger.server(&["127.0.0.1"]))).await;
    let mailer = Mailer::new(over_tls(&sink, SmtpTls::StartTls, Some(ca_file))).unwrap();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve_with_mail(database.clone(), Some(Arc::new(mailer))).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    let address = "untrusted-relay-reader@example.com";
    let user = member(&database, tenant, address, Role::Owner).await;
    let answer = Browser::new(&addr)
        .submit("/auth/reset", "/auth/reset", &[("email", address)])
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .body
            .contains("If an account exists for that address")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let log = log_text();
        let failed = log.lines().find(|line| {
            line.contains("password reset mail could not be sent")
                && line.contains(&format!("id={user}"))
        });
        if let Some(line) = failed {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "the failure was not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains("WARN"), "{line}");
    assert!(
        !line.contains("/auth/reset/") && !line.contains("tributary.example.test"),
        "{line}"
    );
    assert!(!log_text().contains(address), "the address was logged");
    assert!(sink.received().is_empty());
    assert_eq!(
        sink.commands()
            .into_iter()
            .map(|(verb, _)| verb)
            .collect::<Vec<_>>(),
        ["EHLO", "STARTTLS"]
    );
}

#[tokio::test]
async fn a_server_that_does_not_offer_starttls_gets_nothing_in_plain_text() {
    let ca = TestCa::new("Tributary test mail CA");
    let directory = tempfile::tempdir().unwrap();
    // The server speaks plain SMTP and offers AUTH, but not STARTTLS (as a stripping
    // man-in-the-middle would make it look).
    let sink = SmtpSink::start_with(SinkTls::None).await;
    let mailer = Mailer::new(over_tls(
        &sink,
        SmtpTls::StartTls,
        Some(ca.pem_file(&directory)),
    ))
    .unwrap();
    let to = Email::parse("nobody-gets-this@example.com").unwrap();
    let error = mailer
        .send(
            &to,
            "A secret",
            "https://tributary.example.test/auth/reset/x".into(),
        )
        .await
        .expect_err("no STARTTLS, no mail");
    let text = chain(&error);
    assert!(text.contains("STARTTLS is not supported"), "{text}");
    assert!(sink.received().is_empty());
    let commands: Vec<(String, bool)> = sink.commands();
    assert!(
        commands
            .iter()
            .all(|(verb, _)| verb == "EHLO" || verb == "QUIT"),
        "neither the login nor the mail went in plain text: {commands:?}"
    );
}

#[tokio::test]
async fn a_ca_file_must_be_readable_and_hold_a_certificate() {
    let directory = tempfile::tempdir().unwrap();
    let with_ca_file = |path: PathBuf| MailSettings {
        ca_file: Some(path),
        ..plain("mail.example.com", SmtpTls::StartTls)
    };
    assert!(matches!(
        Mailer::new(with_ca_file(directory.path().join("missing.pem"))),
        Err(MailError::CaFile(_))
    ));
    for (name, text) in [
        ("empty.pem", String::new()),
        ("key.pem", KeyPair::generate().unwrap().serialize_pem()),
        (
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
                .to_owned(),
        ),
    ] {
        let path = directory.path().join(name);
        std::fs::write(&path, text).unwrap();
        assert!(
            matches!(
                Mailer::new(with_ca_file(path)),
                Err(MailError::CaFileContent)
            ),
            "{name}"
        );
    }
    let ca = TestCa::new("Tributary test mail CA");
    let settings = with_ca_file(ca.pem_file(&directory));
    assert!(format!("{settings:?}").contains("smtp-ca.pem"));
    assert!(Mailer::new(settings).is_ok());
}
