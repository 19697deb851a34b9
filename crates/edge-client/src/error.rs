//! What can go wrong, classified the way an agent's retry logic needs: retry as is (after
//! [`SendError::retry_after`] or a backoff), or stop and report.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A client could not be set up: a bad URL, or credentials that do not make a TLS identity.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid edge URL: {0}")]
    InvalidUrl(&'static str),
    #[error("invalid credentials: {0}")]
    InvalidCredentials(&'static str),
    #[error("the TLS configuration could not be built")]
    Tls(#[source] rustls::Error),
}

/// Reading or writing a credentials directory failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid credentials file")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path} may be read by other users (mode {mode:o}): it holds the private key; \
         make it readable by its owner only (chmod 600)"
    )]
    Permissions { path: PathBuf, mode: u32 },
}

/// Where a request was when it ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Handshake,
    Request,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connecting",
            Stage::Handshake => "TLS handshake",
            Stage::Request => "waiting for the answer",
        })
    }
}

/// An answer other than success, with the edge's `{"error": {"code", "message"}}` read out.
/// The message never repeats customer values (the protocol guarantees it), so it is safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusError {
    pub status: u16,
    /// The reason code, e.g. `invalid_json`, `rate_limited`; empty when the body had none.
    pub code: String,
    pub message: String,
    /// The `Retry-After` header, in seconds, when there was one.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the edge answered {}", self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// A request to the edge failed. [`SendError::is_retryable`] tells the agent whether to send the
/// same batch again (connection refused or reset, timeouts, 408, 429, 5xx, and `423
/// source_paused`: [`SendError::is_paused`]) or to keep it spooled
/// and report (other 4xx, refused certificates, unreadable answers: a bug or a configuration
/// problem, resending gets the same answer). Either way the batch may have been stored: only
/// an `Ok` answer says it was, and resending is always safe.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to the edge")]
    Connect(#[source] std::io::Error),
    #[error("the TLS handshake with the edge failed")]
    Handshake(#[source] std::io::Error),
    /// A certificate was refused: the edge's by this client (not issued by the pinned CA, wrong
    /// name, expired), or this client's by the edge (revoked, expired, from another CA).
    #[error("a certificate was refused during the TLS handshake")]
    Certificate(#[source] rustls::Error),
    #[error("the connection to the edge failed")]
    Connection(#[source] hyper::Error),
    #[error("no answer from the edge within {timeout:?} ({stage})")]
    Timeout { stage: Stage, timeout: Duration },
    #[error("{0}")]
    Status(StatusError),
    #[error("the edge's answer could not be read: {0}")]
    InvalidResponse(&'static str),
    #[error("the batch could not be encoded")]
    Encode(#[source] protocol::EncodeError),
}

impl SendError {
    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Connect(_)
            | SendError::Handshake(_)
            | SendError::Connection(_)
            | SendError::Timeout { .. } => true,
            SendError::Status(status) => {
                matches!(status.status, 408 | 429)
                    || (500..600).contains(&status.status)
                    || self.is_paused()
            }
            // A 200 that is not the API's answer (a proxy's page, a mismatched result list) is
            // a configuration problem or a bug: the same request would get the same answer.
            SendError::InvalidResponse(_) | SendError::Certificate(_) | SendError::Encode(_) => {
                false
            }
        }
    }

    /// How long the edge asked to wait before the next attempt (429 and 503 carry it).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Status(status) => status.retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when the edge answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Status(status) => Some(status.status),
            _ => None,
        }
    }

    /// The edge's reason code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            SendError::Status(status) if !status.code.is_empty() => Some(&status.code),
            _ => None,
        }
    }

    /// `423 source_paused`: the platform paused the source's ingestion. The batch was not
    /// stored; keep it, back off and send it again: it is taken once the source is resumed.
    pub fn is_paused(&self) -> bool {
        self.status() == Some(423) && self.code() == Some("source_paused")
    }

    /// 413: the batch is too large for the edge; split it and send the halves.
    pub fn is_too_large(&self) -> bool {
        self.status() == Some(413)
    }

    /// Classifies an I/O error of the TLS handshake: a refused certificate is permanent,
    /// anything else (a reset, an early close) is worth retrying.
    pub(crate) fn from_handshake(error: std::io::Error) -> Self {
        match certificate_problem(&error) {
            Some(problem) => SendError::Certificate(problem),
            None => SendError::Handshake(error),
        }
    }

    /// Classifies a connection-level error of a request. With TLS 1.3 the edge reports a
    /// refused client certificate only on the first read, so it shows up here.
    pub(crate) fn from_connection(error: hyper::Error) -> Self {
        match certificate_problem(&error) {
            Some(problem) => SendError::Certificate(problem),
            None => SendError::Connection(error),
        }
    }
}

/// A rustls error somewhere in `error`'s chain that says a certificate was refused, by either
/// side.
fn certificate_problem(error: &(dyn StdError + 'static)) -> Option<rustls::Error> {
    use rustls::AlertDescription as Alert;
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        let tls = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            let refused = match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    true
                }
                rustls::Error::AlertReceived(alert) => matches!(
                    alert,
                    Alert::BadCertificate
                        | Alert::UnsupportedCertificate
                        | Alert::CertificateRevoked
                        | Alert::CertificateExpired
                        | Alert::CertificateUnknown
                        | Alert::UnknownCA
                        | Alert::AccessDenied
                        | Alert::CertificateRequired
                ),
                _ => false,
            };
            return refused.then(|| tls.clone());
        }
        current = error.source();
    }
    None
}

/// Pairing failed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("generating the key or the certificate signing request failed")]
    Key(#[source] rcgen::Error),
    #[error("the pairing request failed")]
    Request(#[from] SendError),
    #[error("the edge's answer is not a usable certificate: {0}")]
    InvalidCertificate(&'static str),
    /// The CA the edge returned did not issue the certificate the edge presented: something
    /// between the agent and the edge is not the edge.
    #[error(
        "the CA certificate returned by the edge does not match the certificate the edge \
         presented; refusing to pin it"
    )]
    CaMismatch(#[source] rustls::Error),
}

impl PairError {
    /// Whether pairing again with the same token may succeed: only transport failures before the
    /// edge redeemed the token. A refused token (401) needs a new one.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PairError::Request(error) if error.is_retryable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> SendError {
        SendError::Status(StatusError {
            status,
            code: "some_code".into(),
            message: "a message".into(),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    #[test]
    fn statuses_are_classified_for_retries() {
        for retryable in [408, 429, 500, 502, 503, 504] {
            assert!(status(retryable, None).is_retryable(), "{retryable}");
        }
        for permanent in [400, 401, 403, 404, 413, 415, 422] {
            assert!(!status(permanent, None).is_retryable(), "{permanent}");
        }
        assert_eq!(
            status(429, Some(3)).retry_after(),
            Some(Duration::from_secs(3))
        );
        assert!(status(413, None).is_too_large());
        assert_eq!(status(400, None).code(), Some("some_code"));
        assert_eq!(
            status(400, None).to_string(),
            "the edge answered 400 some_code: a message"
        );
    }

    #[test]
    fn a_paused_source_is_retryable_and_other_423s_are_not() {
        let paused = SendError::Status(StatusError {
            status: 423,
            code: "source_paused".into(),
            message: "this source's ingestion is paused".into(),
            retry_after: None,
        });
        assert!(paused.is_paused() && paused.is_retryable());
        assert!(!status(423, None).is_paused());
        assert!(!status(423, None).is_retryable());
        let wrong_status = SendError::Status(StatusError {
            status: 403,
            code: "source_paused".into(),
            message: String::new(),
            retry_after: None,
        });
        assert!(!wrong_status.is_paused());
    }

    #[test]
    fn transport_failures_are_retryable_and_refused_certificates_are_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(SendError::Connect(refused).is_retryable());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(SendError::from_handshake(reset).is_retryable());
        assert!(
            SendError::Timeout {
                stage: Stage::Request,
                timeout: Duration::from_secs(1)
            }
            .is_retryable()
        );

        let revoked = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRevoked,
        ));
        let error = SendError::from_handshake(revoked);
        assert!(matches!(error, SendError::Certificate(_)), "{error:?}");
        assert!(!error.is_retryable());

        let untrusted = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(!SendError::from_handshake(untrusted).is_retryable());

        let other_alert = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::InternalError,
        ));
        assert!(SendError::from_handshake(other_alert).is_retryable());
        assert!(!SendError::InvalidResponse("a proxy's page").is_retryable());
    }
}
