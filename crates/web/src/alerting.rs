//! The alert deliverer: sends the notifications the evaluator queued (`pipeline.alert_outbox`)
//! to their channels, through the platform's one outbound HTTP client ([`Outbound`], with its
//! SSRF guard) and its mail sender, with retries and backoff. docs/alerts.md.
//!
//! A webhook delivery is a JSON `POST` carrying the notification, signed so that its receiver
//! can tell it came from this platform and is fresh:
//!
//! - `Tributary-Notification-Id`: the notification's id (the same on a retry: dedupe on it);
//! - `Tributary-Timestamp`: seconds since the Unix epoch when it was sent;
//! - `Tributary-Signature`: `v1=` and the hex HMAC-SHA256, keyed by the channel's secret, of
//!   `<timestamp>.<body>`. A receiver recomputes it and refuses a timestamp more than five
//!   minutes away from its clock (a replay).
//!
//! A redirect is not followed (a receiver that moved is a failure, shown on the channel), so a
//! webhook can never be bounced to an address the guard would refuse.
//!
//! The same outbox carries scheduled reports' outcomes (notice `report`, docs/reports.md): a
//! webhook receives the run's summary with its download address, signed the same way; Slack the
//! line and the link; a mail the summary, with the file attached when it is at most
//! [`ATTACHMENT_LIMIT`] bytes, else the link (which asks the reader to sign in, and expires).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use store::alerts::{Delivery, Outbox};
use store::secret_box::SecretBox;
use time::OffsetDateTime;

use crate::mail::Mailer;
use crate::outbound::Outbound;

/// How long a leased notification is someone's before it may be sent again.
const LEASE: time::Duration = time::Duration::minutes(2);
/// Attempts before a notification is given up.
pub const MAX_ATTEMPTS: i32 = 8;
/// Notifications per round.
const BATCH: i64 = 50;

/// The header names of a signed webhook delivery.
pub const ID_HEADER: &str = "tributary-notification-id";
pub const TIMESTAMP_HEADER: &str = "tributary-timestamp";
pub const SIGNATURE_HEADER: &str = "tributary-signature";

/// The largest report file a mail carries; a larger one is sent as a link.
pub const ATTACHMENT_LIMIT: u64 = 10_000_000;

/// Sends queued notifications. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    /// The outbox, which the process running the deliverer provides on the service handle
    /// (the web app holds the app handle only).
    outbox: Arc<dyn Outbox>,
    outbound: Outbound,
    mail: Option<Arc<Mailer>>,
    secrets: Arc<SecretBox>,
    /// Where report files are read from for attachments.
    exports: Option<reports::ExportStore>,
    attachment_limit: u64,
    /// The web app's address as people reach it, for download links.
    public_url: Option<String>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("outbound", &self.outbound)
            .field("mail", &self.mail.is_some())
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        outbound: Outbound,
        mail: Option<Arc<Mailer>>,
        master_secret: &secrecy::SecretString,
    ) -> Self {
        Self {
            outbox,
            outbound,
            mail,
            secrets: channel_secrets(master_secret),
            exports: None,
            attachment_limit: ATTACHMENT_LIMIT,
            public_url: None,
        }
    }

    /// Delivers report files from `exports`, linking to them under `public_url` (the web app's
    /// address as people reach it; without one, links are the path alone).
    pub fn with_reports(
        mut self,
        exports: reports::ExportStore,
        public_url: Option<String>,
    ) -> Self {
        self.exports = Some(exports);
        self.public_url = public_url.map(|url| url.trim_end_matches('/').to_owned());
        self
    }

    /// Attaches report files of at most `bytes` to mail (default [`ATTACHMENT_LIMIT`]).
    pub fn with_attachment_limit(mut self, bytes: u64) -> Self {
        self.attachment_limit = bytes;
        self
    }

    /// The absolute address of `path`, when the web app's address is known.
    fn link(&self, path: &str) -> String {
        match &self.public_url {
            Some(url) => format!("{url}{path}"),
            None => path.to_owned(),
        }
    }

    /// Sends what is due at `now`; returns how many were attempted.
    pub async fn deliver_round(&self, now: OffsetDateTime) -> Result<usize, store::StoreError> {
        let due = self.outbox.claim(now, LEASE, BATCH).await?;
        for delivery in &due {
            let outcome = self.send(delivery, now).await;
            let retry_at =
                (delivery.attempts < MAX_ATTEMPTS).then(|| now + backoff(delivery.attempts));
            if let Err(error) = &outcome {
                tracing::info!(notification = %delivery.id, channel = %delivery.channel,
                    attempt = delivery.attempts, %error, "an alert notification was not delivered");
            }
            metrics::counter!("tributary_alert_deliveries_total",
                "outcome" => if outcome.is_ok() { "delivered" } else { "failed" })
            .increment(1);
            self.outbox
                .finish(
                    delivery,
                    outcome.as_ref().map(|_| ()).map_err(String::as_str),
                    retry_at,
                )
                .await?;
        }
        Ok(due.len())
    }

    /// Sends one notification. The error is words safe to show on the channel: never the
    /// payload, a secret or a response body.
    async fn send(&self, delivery: &Delivery, now: OffsetDateTime) -> Result<(), String> {
        match delivery.kind.as_str() {
            "webhook" => {
                let secret = match &delivery.sealed_secret {
                    Some((ciphertext, nonce)) => self
                        .secrets
                        .open_bound(ciphertext, nonce, delivery.channel.as_bytes())
                        .map_err(|_| "the channel's secret cannot be read".to_owned())?,
                    None => return Err("the webhook has no signing secret".to_owned()),
                };
                let mut body = delivery.payload.clone();
                body["id"] = serde_json::json!(delivery.id);
                if let Some(path) = delivery.payload["download_path"].as_str() {
                    body["download_url"] = self.link(path).into();
                }
                let body = serde_json::to_vec(&body).map_err(|_| "encoding failed".to_owned())?;
                let timestamp = now.unix_timestamp();
                let signature = sign(&secret, timestamp, &body);
                self.post(
                    &delivery.target,
                    body,
                    &[
                        (ID_HEADER, delivery.id.to_string()),
                        (TIMESTAMP_HEADER, timestamp.to_string()),
                        (SIGNATURE_HEADER, signature),
                    ],
                )
                .await
            }
            "slack" => {
                let mut text = delivery.payload["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if let Some(path) = delivery.payload["download_path"].as_str() {
                    text.push_str(&format!(" <{}|Download>", self.link(path)));
                }
                let body = serde_json::to_vec(&serde_json::json!({ "text": text }))
                    .map_err(|_| "encoding failed".to_owned())?;
                self.post(&delivery.target, body, &[]).await
            }
            "email" => {
                let Some(mail) = &self.mail else {
                    return Err("no mail server is configured (smtp_host)".to_owned());
                };
                let to = domain::Email::parse(&delivery.target)
                    .map_err(|_| "the channel's address is not valid".to_owned())?;
                let subject = delivery.payload["text"]
                    .as_str()
                    .unwrap_or("Tributary alert")
                    .chars()
                    .take(200)
                    .collect::<String>();
                if delivery.notice == "report" {
                    return self.mail_report(mail, &to, &subject, delivery).await;
                }
                let body = mail_body(&delivery.payload, &mail.link("/app/alerts"));
                mail.send(&to, &subject, body)
                    .await
                    .map_err(|error| format!("mail: {error}"))
            }
            other => Err(format!("unknown channel kind {other}")),
        }
    }

    /// A report's outcome by mail: the summary, and the file attached when it is small enough,
    /// else the link to it.
    async fn mail_report(
        &self,
        mail: &Mailer,
        to: &domain::Email,
        subject: &str,
        delivery: &Delivery,
    ) -> Result<(), String> {
        let payload = &delivery.payload;
        let mut body = String::new();
        body.push_str(payload["text"].as_str().unwrap_or_default());
        body.push_str("\n\n");
        if let Some(occurrence) = payload["occurrence"].as_str() {
            body.push_str(&format!("Scheduled for: {occurrence}\n"));
        }
        let mut attachment = None;
        if let (Some(path), Some((key, size))) = (payload["download_path"].as_str(), &delivery.file)
        {
            let size = u64::try_from(*size).unwrap_or(u64::MAX);
            let file_name = payload["file_name"].as_str().unwrap_or("report").to_owned();
            if size <= self.attachment_limit
                && let Some(exports) = &self.exports
            {
                attachment = Some(crate::mail::Attachment {
                    content_type: report_content_type(payload["format"].as_str()).to_owned(),
                    content: read_file(exports, key, self.attachment_limit).await?,
                    file_name: file_name.clone(),
                });
                body.push_str(&format!("The file is attached: {file_name}.\n"));
            } else {
                body.push_str(&format!(
                    "The file is larger than a mail carries. Download it (sign in first): {}\n",
                    mail.link(path)
                ));
            }
            if let Some(expires) = payload["expires_at"].as_str() {
                body.push_str(&format!("It can be downloaded until {expires}.\n"));
            }
        }
        body.push_str(&format!("\nReports: {}\n", mail.link("/app/reports")));
        mail.send_with_attachment(to, subject, body, attachment)
            .await
            .map_err(|error| format!("mail: {error}"))
    }

    async fn post(
        &self,
        target: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<(), String> {
        let mut request = openidconnect::http::Request::post(target)
            .header(
                openidconnect::http::header::CONTENT_TYPE,
                "application/json",
            )
            .header(
                openidconnect::http::header::USER_AGENT,
                "Tributary-Alerts/1",
            );
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(body)
            .map_err(|_| "the URL is not valid".to_owned())?;
        let response = self
            .outbound
            .send(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(format!(
                "HTTP {} (redirects are not followed)",
                status.as_u16()
            ))
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// A report file's media type by its format's name.
fn report_content_type(format: Option<&str>) -> &'static str {
    format.and_then(store::reports::Format::parse).map_or(
        "application/octet-stream",
        store::reports::Format::content_type,
    )
}

/// Reads a report file of at most `limit` bytes into memory for a mail.
async fn read_file(
    exports: &reports::ExportStore,
    key: &str,
    limit: u64,
) -> Result<Vec<u8>, String> {
    use futures_util::TryStreamExt;
    let unavailable = |_| "the report file could not be read from the export store".to_owned();
    let (size, mut stream) = exports.open(key).await.map_err(unavailable)?;
    if size > limit {
        return Err("the report file is larger than a mail carries".to_owned());
    }
    let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = stream.try_next().await.map_err(unavailable)? {
        content.extend_from_slice(&chunk);
    }
    Ok(content)
}

/// The box alert channels' signing secrets are sealed in, under the master secret.
pub fn channel_secrets(master_secret: &secrecy::SecretString) -> Arc<SecretBox> {
    Arc::new(SecretBox::new(
        master_secret,
        store::alerts::CHANNEL_SECRET_PURPOSE,
    ))
}

/// `v1=` and the hex HMAC-SHA256 of `<timestamp>.<body>` keyed by `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long after attempt `attempts` the next one is: 30 s, doubling, at most an hour.
pub fn backoff(attempts: i32) -> time::Duration {
    let seconds = 30i64 << (attempts.clamp(1, 8) - 1);
    time::Duration::seconds(seconds.min(3_600))
}

/// A notification as a plain-text mail: each alert's line and description, and where to look.
fn mail_body(payload: &serde_json::Value, link: &str) -> String {
    let mut body = String::new();
    body.push_str(payload["text"].as_str().unwrap_or_default());
    body.push_str("\n\n");
    for alert in payload["alerts"].as_array().into_iter().flatten() {
        let series = alert["series"].as_str().unwrap_or_default();
        body.push_str(&format!(
            "- {}{}{}\n",
            alert["notice"].as_str().unwrap_or_default(),
            if series.is_empty() { "" } else { " " },
            series
        ));
        if let Some(description) = alert["description"]
            .as_str()
            .filter(|text| !text.is_empty())
        {
            body.push_str(&format!("  {description}\n"));
        }
    }
    body.push_str(&format!("\nAlerts: {link}\n"));
    body
}

/// Runs delivery rounds every `tick` until `shutdown`.
pub async fn run(deliverer: Deliverer, tick: Duration, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        match deliverer.deliver_round(OffsetDateTime::now_utc()).await {
            Ok(count) if count as i64 >= BATCH => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "an alert delivery round failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(1), time::Duration::seconds(30));
        assert_eq!(backoff(2), time::Duration::seconds(60));
        assert_eq!(backoff(7), time::Duration::seconds(1_920));
        assert_eq!(backoff(8), time::Duration::seconds(3_600));
    }
}
