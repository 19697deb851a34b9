//! Outgoing mail: the password-reset, sign-up and invitation links, and the notice to an account
//! whose address someone tried to sign up with. With a mail server configured ([`MailSettings`],
//! from the platform's `smtp_*` settings) they are sent by SMTP as plain text, in the background
//! so that the answer to a reset or sign-up request takes as long whether or not the account
//! exists; the link is a secret and never logged then. Without one, the link is written to the
//! server log for local use, named by an id, never by the address.
//!
//! With TLS (STARTTLS or from the first byte) the server's certificate is checked against the
//! public roots (webpki-roots) and any authorities of [`MailSettings::ca_file`], for a relay with
//! a company's own certificate; a server that cannot show a trusted certificate for the host, or
//! that does not offer STARTTLS when that is the mode, gets nothing: there is no fallback to
//! plain text.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use domain::{Email, Role, UserId};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};

use crate::AppState;

/// How long one SMTP exchange may take before it is given up.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text: only to a server on this machine (loopback), e.g. a local relay.
    None,
    /// Plain text upgraded with STARTTLS, which the server must offer (port 587 by default).
    StartTls,
    /// TLS from the first byte (port 465 by default).
    Tls,
}

impl SmtpTls {
    pub const NAMES: [&'static str; 3] = ["none", "starttls", "tls"];

    fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

impl FromStr for SmtpTls {
    type Err = MailError;

    fn from_str(text: &str) -> Result<Self, MailError> {
        match text {
            "none" => Ok(SmtpTls::None),
            "starttls" => Ok(SmtpTls::StartTls),
            "tls" => Ok(SmtpTls::Tls),
            _ => Err(MailError::UnknownTlsMode),
        }
    }
}

/// Where and how to send mail.
#[derive(Clone)]
pub struct MailSettings {
    pub host: String,
    /// By default the TLS mode's usual port.
    pub port: Option<u16>,
    pub tls: SmtpTls,
    /// A PEM file of certificate authorities to trust for the server's certificate, besides the
    /// public roots: for a relay whose certificate a company's own CA issued.
    pub ca_file: Option<PathBuf>,
    /// User name and password, when the server wants them.
    pub credentials: Option<(String, SecretString)>,
    /// The sender, e.g. `Tributary <no-reply@example.com>`.
    pub from: String,
    /// The web app's address as people reach it (`https://tributary.example.com`): links in mail
    /// are built from it, never from a request's `Host` header, which a requester controls.
    pub public_url: String,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("from", &self.from)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// Why mail could not be set up or sent. Never carries a password or a link.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the SMTP TLS mode must be one of none, starttls, tls")]
    UnknownTlsMode,
    #[error("the SMTP host must not be empty")]
    NoHost,
    #[error("SMTP without TLS is only allowed to a loopback host (127.0.0.1, ::1, localhost)")]
    PlainTextToRemoteHost,
    #[error("the SMTP CA file could not be read")]
    CaFile(#[source] std::io::Error),
    #[error("the SMTP CA file holds no PEM certificate, or one that cannot be read")]
    CaFileContent,
    #[error("the SMTP sender address is not a valid mailbox")]
    BadSender,
    #[error("the public URL must start with http:// or https:// and hold no spaces")]
    BadPublicUrl,
    #[error("the recipient address is not a valid mailbox")]
    BadRecipient,
    #[error("the message could not be built")]
    Message(#[source] lettre::error::Error),
    #[error("the message body could not be encoded")]
    Body,
    #[error("the mail server refused or could not be reached")]
    Smtp(#[source] lettre::transport::smtp::Error),
}

/// An SMTP connection pool and what every message shares.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    public_url: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

impl Mailer {
    /// Checks the settings and sets up the connection pool. Call it within the Tokio runtime:
    /// the pool runs a task there (connections are made when the first mail goes out).
    pub fn new(settings: MailSettings) -> Result<Self, MailError> {
        let host = settings.host.trim();
        if host.is_empty() {
            return Err(MailError::NoHost);
        }
        if settings.tls == SmtpTls::None && !is_loopback(host) {
            return Err(MailError::PlainTextToRemoteHost);
        }
        let public_url = settings.public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("https://") || public_url.starts_with("http://"))
            || public_url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(MailError::BadPublicUrl);
        }
        let from: Mailbox = settings.from.parse().map_err(|_| MailError::BadSender)?;
        let tls = match settings.tls {
            SmtpTls::None => Tls::None,
            // `Required`, never `Opportunistic`: a server (or someone in between) that does not
            // offer STARTTLS must not get the link in plain text.
            SmtpTls::StartTls => Tls::Required(tls_parameters(host, settings.ca_file.as_ref())?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(host, settings.ca_file.as_ref())?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.port.unwrap_or(settings.tls.default_port()))
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = settings.credentials {
            builder =
                builder.credentials(Credentials::new(user, password.expose_secret().to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            public_url,
        })
    }

    /// The absolute address of `path` in the web app.
    pub fn link(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// Sends one plain-text message to `to`. The body is quoted-printable whatever it holds, so
    /// a long link survives every relay intact (after decoding).
    pub async fn send(&self, to: &Email, subject: &str, body: String) -> Result<(), MailError> {
        self.send_with_attachment(to, subject, body, None).await
    }

    /// Sends a plain-text message with, if given, one file attached (base64).
    pub async fn send_with_attachment(
        &self,
        to: &Email,
        subject: &str,
        body: String,
        attachment: Option<Attachment>,
    ) -> Result<(), MailError> {
        let to: Mailbox = to.as_str().parse().map_err(|_| MailError::BadRecipient)?;
        let text = SinglePart::builder().header(ContentType::TEXT_PLAIN).body(
            Body::new_with_encoding(body, ContentTransferEncoding::QuotedPrintable)
                .map_err(|_| MailError::Body)?,
        );
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject);
        let message = match attachment {
            None => builder.singlepart(text),
            Some(file) => {
                let content_type =
                    ContentType::parse(&file.content_type).map_err(|_| MailError::Body)?;
                builder.multipart(
                    MultiPart::mixed().singlepart(text).singlepart(
                        lettre::message::Attachment::new(file.file_name)
                            .body(file.content, content_type),
                    ),
                )
            }
        }
        .map_err(MailError::Message)?;
        self.transport
            .send(message)
            .await
            .map_err(MailError::Smtp)?;
        Ok(())
    }
}

/// A file attached to a message.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub file_name: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// TLS to `host` (the name its certificate must hold), trusting the public roots and the
/// authorities in `ca_file`.
fn tls_parameters(host: &str, ca_file: Option<&PathBuf>) -> Result<TlsParameters, MailError> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(MailError::CaFile)?;
        let authorities = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| MailError::CaFileContent)?;
        if authorities.is_empty() {
            return Err(MailError::CaFileContent);
        }
        for authority in authorities {
            // lettre would only find a bad one when building, as if the server had failed.
            rustls::RootCertStore::empty()
                .add(authority.clone())
                .map_err(|_| MailError::CaFileContent)?;
            let certificate =
                Certificate::from_der(authority.to_vec()).map_err(|_| MailError::CaFileContent)?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build_rustls().map_err(MailError::Smtp)
}

/// Sends `body` in the background; `what` and `id` name it in the log, whatever happens.
fn send_in_background(
    mailer: Arc<Mailer>,
    to: Email,
    subject: &'static str,
    body: String,
    what: &'static str,
    id: String,
) {
    tokio::spawn(async move {
        match mailer.send(&to, subject, body).await {
            Ok(()) => tracing::info!(%id, "{what} mail sent"),
            Err(error) => tracing::warn!(%id, %error, "{what} mail could not be sent"),
        }
    });
}

/// Delivers a password-reset link for `user` at `to`: by mail, or to the log.
pub fn deliver_password_reset(
    state: &AppState,
    user: UserId,
    to: &Email,
    token: &str,
    valid_minutes: i64,
) {
    let path = format!("/auth/reset/{token}");
    let Some(mailer) = &state.mail else {
        // The address itself is personal data: the log names the account by id.
        tracing::info!(
            %user,
            link = %path,
            "password reset link (no mail server configured; deliver it by hand)"
        );
        return;
    };
    let body = format!(
        "Someone asked to reset the password of your Tributary account.\n\n\
         Open this link within {valid_minutes} minutes to choose a new password. It works once, \
         and signs you out everywhere:\n\n{}\n\n\
         If you did not ask for this, ignore this message: your password stays as it is.\n",
        mailer.link(&path)
    );
    send_in_background(
        mailer.clone(),
        to.clone(),
        "Reset your Tributary password",
        body,
        "password reset",
        user.to_string(),
    );
}

/// Delivers the link that finishes the pending sign-up `signup` (creating `workspace`) to the
/// address it was made with, `to`: by mail, or to the log.
pub fn deliver_sign_up(
    state: &AppState,
    signup: uuid::Uuid,
    to: &Email,
    workspace: &str,
    token: &str,
    valid_hours: i64,
) {
    let path = format!("/auth/sign-up/{token}");
    let Some(mailer) = &state.mail else {
        tracing::info!(
            %signup,
            link = %path,
            "sign-up link (no mail server configured; deliver it by hand)"
        );
        return;
    };
    let body = format!(
        "Someone, probably you, asked to create the Tributary workspace \"{workspace}\" with this \
         address.\n\n\
         Open this link within {valid_hours} hours to finish creating it. It works once:\n\n{}\n\n\
         If you did not ask for this, ignore this message: no account is created.\n",
        mailer.link(&path)
    );
    send_in_background(
        mailer.clone(),
        to.clone(),
        "Finish creating your Tributary workspace",
        body,
        "sign-up",
        signup.to_string(),
    );
}

/// Tells the account `user` at `to` that someone tried to sign up with its address: by mail, or,
/// without a mail server, a line in the log naming the account by id (there is no link to hand
/// over).
pub fn deliver_sign_up_notice(state: &AppState, user: UserId, to: &Email) {
    let Some(mailer) = &state.mail else {
        tracing::info!(
            %user,
            "sign-up attempted with an existing account's address (no mail server configured; \
             notice not sent)"
        );
        return;
    };
    let body = format!(
        "Someone tried to create a Tributary workspace with this address, which already has an \
         account. No new account was created.\n\n\
         If it was you, sign in instead:\n\n{}\n\n\
         If you forgot your password, choose a new one here:\n\n{}\n\n\
         If it was not you, ignore this message: nothing changed.\n",
        mailer.link("/auth"),
        mailer.link("/auth/reset"),
    );
    send_in_background(
        mailer.clone(),
        to.clone(),
        "Someone tried to sign up with your address",
        body,
        "sign-up notice",
        user.to_string(),
    );
}

/// Delivers an invitation to `workspace` as `role` at `to`: by mail, or to the log.
pub fn deliver_invitation(
    state: &AppState,
    invitation: uuid::Uuid,
    to: &Email,
    workspace: &str,
    role: Role,
    token: &str,
    valid_days: i64,
) {
    let path = format!("/auth/invitation/{token}");
    let Some(mailer) = &state.mail else {
        tracing::info!(
            %invitation,
            link = %path,
            "invitation link (no mail server configured; deliver it by hand)"
        );
        return;
    };
    let body = format!(
        "You are invited to join the workspace \"{workspace}\" on Tributary, as {role}.\n\n\
         Open this link within {valid_days} days to accept. It works once:\n\n{}\n\n\
         If you did not expect this invitation, ignore this message.\n",
        mailer.link(&path)
    );
    send_in_background(
        mailer.clone(),
        to.clone(),
        "Your invitation to a Tributary workspace",
        body,
        "invitation",
        invitation.to_string(),
    );
}
