//! Configuration: command-line flags, `TRIBUTARY_*` environment variables and an optional TOML
//! file, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use secrecy::SecretString;
use serde::Deserialize;

use crate::cli::{GlobalOptions, UpArgs};
use crate::logging::LogFormat;
use crate::operations::{OperationsFile, OperationsSettings};

pub const DEFAULT_DATA_DIR: &str = ".tributary";
pub const DEFAULT_WEB_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_EDGE_ADDR: &str = "127.0.0.1:8443";

/// The keys a configuration file may set; every one is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    app_database_url: Option<String>,
    service_database_url: Option<String>,
    log_format: Option<LogFormat>,
    web_addr: Option<SocketAddr>,
    edge_addr: Option<SocketAddr>,
    edge_hostnames: Option<Vec<String>>,
    edge_public_url: Option<String>,
    bus: Option<String>,
    secret_key: Option<String>,
    rollup_min_cohort: Option<i64>,
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    smtp_tls: Option<String>,
    smtp_ca_file: Option<PathBuf>,
    smtp_username: Option<String>,
    smtp_password: Option<String>,
    smtp_from: Option<String>,
    public_url: Option<String>,
    dev_allow_loopback_http: Option<bool>,
    outbound_allow_private_targets: Option<bool>,
    dns_resolver: Option<SocketAddr>,
    trusted_proxies: Option<Vec<String>>,
    export_store: Option<String>,
    export_s3_region: Option<String>,
    export_s3_endpoint: Option<String>,
    export_s3_access_key_id: Option<String>,
    export_s3_secret_access_key: Option<String>,
    // Operational settings (crate::operations).
    metrics_addr: Option<SocketAddr>,
    metrics_token: Option<String>,
    edge_handshake_timeout_secs: Option<u64>,
    edge_first_request_timeout_secs: Option<u64>,
    edge_idle_timeout_secs: Option<u64>,
    edge_anonymous_request_timeout_secs: Option<u64>,
    edge_max_anonymous_connections: Option<u64>,
    edge_max_certified_connections: Option<u64>,
    edge_max_connections_per_address: Option<u64>,
    edge_max_connections_per_source: Option<u64>,
    edge_body_budget_bytes: Option<u64>,
    edge_tenant_body_budget_bytes: Option<u64>,
    edge_body_budget_wait_ms: Option<u64>,
    edge_max_consumer_lag: Option<u64>,
}

impl FileSettings {
    /// The operational keys, for [`OperationsSettings::resolve`].
    fn operations(&mut self) -> OperationsFile {
        OperationsFile {
            metrics_addr: self.metrics_addr.take(),
            metrics_token: self.metrics_token.take(),
            edge: vec![
                (
                    "edge_handshake_timeout_secs",
                    self.edge_handshake_timeout_secs,
                ),
                (
                    "edge_first_request_timeout_secs",
                    self.edge_first_request_timeout_secs,
                ),
                ("edge_idle_timeout_secs", self.edge_idle_timeout_secs),
                (
                    "edge_anonymous_request_timeout_secs",
                    self.edge_anonymous_request_timeout_secs,
                ),
                (
                    "edge_max_anonymous_connections",
                    self.edge_max_anonymous_connections,
                ),
                (
                    "edge_max_certified_connections",
                    self.edge_max_certified_connections,
                ),
                (
                    "edge_max_connections_per_address",
                    self.edge_max_connections_per_address,
                ),
                (
                    "edge_max_connections_per_source",
                    self.edge_max_connections_per_source,
                ),
                ("edge_body_budget_bytes", self.edge_body_budget_bytes),
                (
                    "edge_tenant_body_budget_bytes",
                    self.edge_tenant_body_budget_bytes,
                ),
                ("edge_body_budget_wait_ms", self.edge_body_budget_wait_ms),
                ("edge_max_consumer_lag", self.edge_max_consumer_lag),
            ],
        }
    }
}

/// Where the database is.
#[derive(Debug, Clone)]
pub enum DatabaseChoice {
    /// A private cluster under the data directory.
    Managed,
    /// A server given by URL (an administrative login, used for bootstrap and migrations),
    /// optionally with explicit URLs for the app and service roles.
    Given {
        admin_url: SecretString,
        app_url: Option<SecretString>,
        service_url: Option<SecretString>,
    },
}

/// The resolved settings every command runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database: DatabaseChoice,
    pub log_format: LogFormat,
    pub web_addr: SocketAddr,
    pub edge_addr: SocketAddr,
    /// Names the edge's server certificate is valid for.
    pub edge_hostnames: Vec<String>,
    /// The edge's address as agents reach it, when configured (see edge_url.rs).
    pub edge_public_url: Option<String>,
    /// `embedded` or a `nats://` URL.
    pub bus: String,
    /// The master secret, when configured; otherwise kept in the data directory.
    pub secret_key: Option<SecretString>,
    /// The global console's minimum cohort (k), at least 2.
    pub rollup_min_cohort: i64,
    /// The mail server for reset, sign-up and invitation links; `None` logs the links instead.
    pub smtp: Option<SmtpSettings>,
    /// The web app's address as people reach it; by default `http://<web address>`.
    pub public_url: Option<String>,
    /// Development only: the outbound HTTP client may use plain http and loopback hosts (an
    /// IdP on this machine). Off by default (`TRIBUTARY_DEV_ALLOW_LOOPBACK_HTTP`).
    pub dev_allow_loopback_http: bool,
    /// On-premise installs: the outbound HTTP client may reach private networks (never
    /// loopback or link-local). Off by default (`TRIBUTARY_OUTBOUND_ALLOW_PRIVATE_TARGETS`).
    pub outbound_allow_private_targets: bool,
    /// The DNS server checking SSO domains' TXT records; `None`: the system's resolvers.
    pub dns_resolver: Option<SocketAddr>,
    /// The reverse proxies whose `X-Forwarded-For` names the client; none by default.
    pub trusted_proxies: web::client_addr::TrustedProxies,
    /// Where `/metrics` is served, and the edge's limits.
    pub operations: OperationsSettings,
    /// Where report files are kept.
    pub exports: ExportChoice,
}

/// Where report files are kept.
#[derive(Debug, Clone)]
pub enum ExportChoice {
    /// `<data dir>/exports`.
    Local,
    /// An S3-compatible bucket.
    S3(reports::S3Location),
}

impl ExportChoice {
    /// Flags (and their environment variables) over the file.
    fn resolve(args: &crate::cli::ExportArgs, file: &mut FileSettings) -> anyhow::Result<Self> {
        let text = |flag: &Option<String>, file: Option<String>| {
            flag.clone()
                .or(file)
                .filter(|value| !value.trim().is_empty())
        };
        let store = text(&args.export_store, file.export_store.take());
        let region = text(&args.export_s3_region, file.export_s3_region.take());
        let endpoint = text(&args.export_s3_endpoint, file.export_s3_endpoint.take());
        let key_id = text(
            &args.export_s3_access_key_id,
            file.export_s3_access_key_id.take(),
        );
        let secret = text(
            &args.export_s3_secret_access_key,
            file.export_s3_secret_access_key.take(),
        );
        match store.as_deref() {
            None | Some("local") => Ok(ExportChoice::Local),
            Some(url) => {
                let (Some(key_id), Some(secret)) = (key_id, secret) else {
                    anyhow::bail!(
                        "an S3 export store needs export_s3_access_key_id and \
                         export_s3_secret_access_key (TRIBUTARY_EXPORT_S3_ACCESS_KEY_ID, \
                         TRIBUTARY_EXPORT_S3_SECRET_ACCESS_KEY)"
                    );
                };
                let location = reports::S3Location::parse(
                    url,
                    region,
                    endpoint,
                    key_id,
                    SecretString::from(secret),
                )
                .map_err(|why| {
                    anyhow::anyhow!("invalid export_store (TRIBUTARY_EXPORT_STORE): {why}")
                })?;
                Ok(ExportChoice::S3(location))
            }
        }
    }
}

/// The SMTP server the web app sends mail through.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: Option<u16>,
    pub tls: web::mail::SmtpTls,
    /// Authorities to trust for the server's certificate, besides the public roots.
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<(String, SecretString)>,
    pub from: String,
}

impl SmtpSettings {
    /// Flags (and their environment variables) over the file; no host, no mail.
    fn resolve(
        args: &crate::cli::MailArgs,
        file: &mut FileSettings,
    ) -> anyhow::Result<Option<Self>> {
        let text = |flag: &Option<String>, file: Option<String>| {
            flag.clone()
                .or(file)
                .filter(|value| !value.trim().is_empty())
        };
        let Some(host) = text(&args.smtp_host, file.smtp_host.take()) else {
            return Ok(None);
        };
        let tls = text(&args.smtp_tls, file.smtp_tls.take())
            .as_deref()
            .unwrap_or("starttls")
            .parse()
            .context("invalid smtp_tls (TRIBUTARY_SMTP_TLS / --smtp-tls)")?;
        let from = text(&args.smtp_from, file.smtp_from.take())
            .context("smtp_from (TRIBUTARY_SMTP_FROM / --smtp-from) is required with smtp_host")?;
        let username = text(&args.smtp_username, file.smtp_username.take());
        let password = text(&args.smtp_password, file.smtp_password.take());
        let credentials = match (username, password) {
            (Some(username), Some(password)) => Some((username, SecretString::from(password))),
            (None, None) => None,
            _ => anyhow::bail!(
                "smtp_username and smtp_password (TRIBUTARY_SMTP_USERNAME, TRIBUTARY_SMTP_PASSWORD) go together"
            ),
        };
        Ok(Some(Self {
            host,
            port: args.smtp_port.or(file.smtp_port),
            tls,
            ca_file: args
                .smtp_ca_file
                .clone()
                .or(file.smtp_ca_file.take())
                .filter(|path| !path.as_os_str().is_empty()),
            credentials,
            from,
        }))
    }
}

impl Settings {
    /// The settings of every command; `up` is the `up` command's own options, if it runs.
    pub fn resolve(global: &GlobalOptions, up: Option<&UpArgs>) -> anyhow::Result<Self> {
        let mut file = match &global.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let web_addr = up.and_then(|up| up.web_addr);
        let mail = up.map(|up| up.mail.clone()).unwrap_or_default();
        let smtp = SmtpSettings::resolve(&mail, &mut file)?;
        let operations =
            OperationsSettings::resolve(up.map(|up| &up.operations), file.operations())?;
        let public_url = mail.public_url.clone().or(file.public_url.take());
        let exports = ExportChoice::resolve(
            &up.map(|up| up.exports.clone()).unwrap_or_default(),
            &mut file,
        )?;
        let secret =
            |value: Option<String>| value.filter(|url| !url.is_empty()).map(SecretString::from);
        let database = match secret(global.database_url.clone().or(file.database_url)) {
            Some(admin_url) => DatabaseChoice::Given {
                admin_url,
                app_url: secret(global.app_database_url.clone().or(file.app_database_url)),
                service_url: secret(
                    global
                        .service_database_url
                        .clone()
                        .or(file.service_database_url),
                ),
            },
            None => DatabaseChoice::Managed,
        };
        let dev_allow_loopback_http = up.is_some_and(|up| up.dev_allow_loopback_http)
            || file.dev_allow_loopback_http.unwrap_or(false);
        let outbound_allow_private_targets = up.is_some_and(|up| up.outbound_allow_private_targets)
            || file.outbound_allow_private_targets.unwrap_or(false);
        let dns_resolver = up.and_then(|up| up.dns_resolver).or(file.dns_resolver);
        let trusted_proxies = web::client_addr::TrustedProxies::parse(
            &up.map(|up| up.trusted_proxies.clone())
                .filter(|flags| !flags.is_empty())
                .or(file.trusted_proxies.take())
                .unwrap_or_default(),
        )
        .context("invalid trusted_proxies (TRIBUTARY_TRUSTED_PROXIES / --trusted-proxy)")?;
        let edge_public_url = edge_public_url(
            global
                .edge_public_url
                .clone()
                .or(file.edge_public_url.take()),
        )?;
        Ok(Self {
            operations,
            exports,
            edge_public_url,
            smtp,
            public_url,
            dev_allow_loopback_http,
            outbound_allow_private_targets,
            dns_resolver,
            trusted_proxies,
            data_dir: global
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database,
            log_format: global
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            web_addr: web_addr
                .or(file.web_addr)
                .unwrap_or_else(|| DEFAULT_WEB_ADDR.parse().expect("valid default address")),
            edge_addr: global
                .edge_addr
                .or(file.edge_addr)
                .unwrap_or_else(|| DEFAULT_EDGE_ADDR.parse().expect("valid default address")),
            edge_hostnames: file
                .edge_hostnames
                .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into()]),
            bus: global
                .bus
                .clone()
                .or(file.bus)
                .unwrap_or_else(|| "embedded".into()),
            secret_key: secret(global.secret_key.clone().or(file.secret_key)),
            rollup_min_cohort: global
                .rollup_min_cohort
                .or(file.rollup_min_cohort)
                .unwrap_or(store::rollups::DEFAULT_MIN_COHORT)
                .max(2),
        })
    }

    /// The master secret: configured, or generated once into `<data-dir>/secret.key`.
    pub fn master_secret(&self) -> anyhow::Result<SecretString> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;

        if let Some(secret) = &self.secret_key {
            return Ok(secret.clone());
        }
        let path = self.data_dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                return Ok(SecretString::from(text.trim().to_owned()));
            }
            Ok(_) => anyhow::bail!("{} is empty", path.display()),
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
            Err(_) => {}
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        // Written to a private temporary file and linked into place, so a concurrent start
        // never reads a half-written secret, and the first of two starts wins.
        let generated = store::random_token(32);
        let temporary = self
            .data_dir
            .join(format!(".secret.key.{}", store::random_token(8)));
        // create_new: never follows or reuses what someone else put there.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        file.write_all(generated.as_bytes())?;
        file.sync_all()?;
        let linked = std::fs::hard_link(&temporary, &path);
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "generated the platform's master secret");
                Ok(SecretString::from(generated))
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(SecretString::from(text.trim().to_owned()))
            }
            Err(error) => Err(error).with_context(|| format!("creating {}", path.display())),
        }
    }
}

/// The edge's public address (`edge_public_url`): `url` if it is an `https://` URL with a host and nothing after the authority but an
/// optional `/`; `None` stays `None` (empty means unset).
fn edge_public_url(url: Option<String>) -> anyhow::Result<Option<String>> {
    let Some(url) = url
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
    else {
        return Ok(None);
    };
    let authority = url
        .strip_prefix("https://")
        .map(|rest| rest.strip_suffix('/').unwrap_or(rest))
        .filter(|authority| {
            !authority.is_empty()
                && !authority.starts_with(':')
                && !authority.contains(['/', '?', '#', '@'])
                && !authority
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
        })
        .context(
            "edge_public_url (TRIBUTARY_EDGE_PUBLIC_URL / --edge-public-url) must be \
             https://host or https://host:port",
        )?;
    Ok(Some(format!("https://{authority}")))
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in the configuration file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};

    fn global(config: Option<PathBuf>, data_dir: Option<&str>) -> GlobalOptions {
        GlobalOptions {
            config,
            data_dir: data_dir.map(PathBuf::from),
            database_url: None,
            app_database_url: None,
            service_database_url: None,
            edge_addr: None,
            edge_public_url: None,
            bus: None,
            secret_key: None,
            log_format: None,
            rollup_min_cohort: None,
        }
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("tributary-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tributary.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/tributary\"\nlog_format = \"json\"\nweb_addr = \"127.0.0.1:9000\"\n\
             database_url = \"postgres://admin@db/tributary\"\nrollup_min_cohort = 1\n",
        )
        .unwrap();

        let from_file = Settings::resolve(&global(Some(path.clone()), None), None).unwrap();
        assert_eq!(from_file.data_dir, PathBuf::from("/srv/tributary"));
        assert_eq!(from_file.log_format, LogFormat::Json);
        assert_eq!(from_file.web_addr.port(), 9000);
        assert!(matches!(from_file.database, DatabaseChoice::Given { .. }));
        assert_eq!(from_file.rollup_min_cohort, 2, "k is never below 2");

        let mut up = UpArgs {
            web_addr: Some("127.0.0.1:0".parse().unwrap()),
            no_demo: false,
            dev_allow_loopback_http: false,
            outbound_allow_private_targets: false,
            dns_resolver: None,
            trusted_proxies: Vec::new(),
            mail: crate::cli::MailArgs::default(),
            operations: Default::default(),
            exports: Default::default(),
        };
        let flagged = Settings::resolve(
            &global(Some(path.clone()), Some("/tmp/elsewhere")),
            Some(&up),
        )
        .unwrap();
        assert_eq!(flagged.data_dir, PathBuf::from("/tmp/elsewhere"));
        assert_eq!(flagged.web_addr.port(), 0);
        assert!(!flagged.dev_allow_loopback_http, "off unless asked for");
        assert_eq!(flagged.dns_resolver, None, "the system's resolvers");
        up.dev_allow_loopback_http = true;
        up.dns_resolver = Some("127.0.0.1:5353".parse().unwrap());
        let development = Settings::resolve(&global(Some(path.clone()), None), Some(&up)).unwrap();
        assert!(development.dev_allow_loopback_http);
        assert_eq!(development.dns_resolver, up.dns_resolver);

        let defaults = Settings::resolve(&global(None, None), None).unwrap();
        assert_eq!(defaults.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(matches!(defaults.database, DatabaseChoice::Managed));
        assert!(
            !defaults.dev_allow_loopback_http,
            "outbound requests reach public https hosts only by default"
        );
        assert!(
            !defaults.outbound_allow_private_targets,
            "private networks only when an on-premise install asks"
        );
        assert_eq!(
            defaults.rollup_min_cohort,
            store::rollups::DEFAULT_MIN_COHORT
        );

        std::fs::write(&path, "data_dri = \"/typo\"\n").unwrap();
        let error = Settings::resolve(&global(Some(path), None), None).unwrap_err();
        assert!(
            format!("{error:#}").contains("unknown field `data_dri`"),
            "{error:#}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn mail_comes_from_flags_over_the_file_and_is_checked() {
        use secrecy::ExposeSecret;

        let dir = std::env::temp_dir().join(format!("tributary-mail-{}", store::random_token(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tributary.toml");
        std::fs::write(
            &path,
            "smtp_host = \"mail.example.com\"\nsmtp_username = \"relay\"\n\
             smtp_password = \"from-the-file\"\nsmtp_from = \"Tributary <no-reply@example.com>\"\n\
             public_url = \"https://tributary.example.com\"\nsmtp_ca_file = \"/etc/tributary/smtp-ca.pem\"\n",
        )
        .unwrap();
        let from_file = Settings::resolve(&global(Some(path.clone()), None), None).unwrap();
        let smtp = from_file.smtp.expect("mail configured by the file");
        assert_eq!(smtp.host, "mail.example.com");
        assert_eq!(smtp.tls, web::mail::SmtpTls::StartTls, "the default");
        assert_eq!(
            smtp.ca_file,
            Some(PathBuf::from("/etc/tributary/smtp-ca.pem"))
        );
        let (user, password) = smtp.credentials.unwrap();
        assert_eq!(
            (user.as_str(), password.expose_secret()),
            ("relay", "from-the-file")
        );
        assert_eq!(
            from_file.public_url.as_deref(),
            Some("https://tributary.example.com")
        );
        assert!(
            !format!(
                "{:?}",
                Settings::resolve(&global(Some(path.clone()), None), None).unwrap()
            )
            .contains("from-the-file"),
            "the password is never printed"
        );

        let mut up = UpArgs {
            web_addr: None,
            no_demo: true,
            dev_allow_loopback_http: false,
            outbound_allow_private_targets: false,
            dns_resolver: None,
            trusted_proxies: Vec::new(),
            mail: crate::cli::MailArgs {
                smtp_host: Some("127.0.0.1".into()),
                smtp_port: Some(2525),
                smtp_tls: Some("none".into()),
                smtp_ca_file: Some(PathBuf::from("/run/secrets/relay-ca.pem")),
                ..Default::default()
            },
            operations: Default::default(),
            exports: Default::default(),
        };
        let flagged = Settings::resolve(&global(Some(path.clone()), None), Some(&up)).unwrap();
        let smtp = flagged.smtp.unwrap();
        assert_eq!(
            (smtp.host.as_str(), smtp.port, smtp.tls),
            ("127.0.0.1", Some(2525), web::mail::SmtpTls::None)
        );
        assert_eq!(
            smtp.ca_file,
            Some(PathBuf::from("/run/secrets/relay-ca.pem")),
            "the flag over the file"
        );

        up.mail.smtp_tls = Some("ssl".into());
        let error = Settings::resolve(&global(Some(path.clone()), None), Some(&up)).unwrap_err();
        assert!(
            format!("{error:#}").contains("none, starttls, tls"),
            "{error:#}"
        );
        std::fs::write(
            &path,
            "smtp_host = \"mail.example.com\"\nsmtp_username = \"relay\"\n",
        )
        .unwrap();
        let error = Settings::resolve(&global(Some(path.clone()), None), None).unwrap_err();
        assert!(format!("{error:#}").contains("smtp_from"), "{error:#}");
        std::fs::write(
            &path,
            "smtp_host = \"mail.example.com\"\nsmtp_username = \"relay\"\nsmtp_from = \"a@example.com\"\n",
        )
        .unwrap();
        let error = Settings::resolve(&global(Some(path), None), None).unwrap_err();
        assert!(format!("{error:#}").contains("go together"), "{error:#}");
        assert!(
            Settings::resolve(&global(None, None), None)
                .unwrap()
                .smtp
                .is_none()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_export_store_is_local_unless_an_s3_bucket_is_named_with_its_key() {
        let resolve = |store: Option<&str>, key: bool| {
            let mut file = FileSettings {
                export_s3_endpoint: Some("http://127.0.0.1:9000".into()),
                export_s3_access_key_id: key.then(|| "AKIA".into()),
                export_s3_secret_access_key: key.then(|| "shh-its-a-secret".into()),
                ..FileSettings::default()
            };
            let args = crate::cli::ExportArgs {
                export_store: store.map(str::to_owned),
                ..Default::default()
            };
            ExportChoice::resolve(&args, &mut file)
        };
        assert!(matches!(resolve(None, false).unwrap(), ExportChoice::Local));
        assert!(matches!(
            resolve(Some("local"), false).unwrap(),
            ExportChoice::Local
        ));
        let ExportChoice::S3(location) =
            resolve(Some("s3://acme-exports/tributary/"), true).unwrap()
        else {
            panic!("not S3");
        };
        assert_eq!(location.bucket, "acme-exports");
        assert_eq!(location.prefix.as_deref(), Some("tributary"));
        assert_eq!(location.region, "us-east-1");
        assert_eq!(location.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(!format!("{location:?}").contains("shh-its-a-secret"));
        let missing = resolve(Some("s3://acme-exports"), false).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("TRIBUTARY_EXPORT_S3_ACCESS_KEY_ID")
        );
        for bad in ["s3://Acme_Exports", "gs://bucket", "s3://ab"] {
            let error = resolve(Some(bad), true).unwrap_err();
            assert!(error.to_string().contains("export_store"), "{bad}: {error}");
        }
    }

    #[test]
    fn trusted_proxies_come_from_repeated_flags_the_variable_or_the_file() {
        use clap::{CommandFactory, Parser};

        let up_args = |args: &[&str]| {
            let cli =
                crate::cli::Cli::try_parse_from(["tributary", "up"].iter().chain(args).copied())
                    .unwrap();
            match cli.command {
                crate::cli::Command::Up(up) => up,
                _ => unreachable!("the up command"),
            }
        };
        let ip = |text: &str| -> std::net::IpAddr { text.parse().unwrap() };
        // The flag, repeated, and the variable (comma-separated) are one setting of `up`.
        let up = up_args(&[
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "fd00::1",
        ]);
        assert_eq!(up.trusted_proxies, ["10.0.0.0/8", "fd00::1"]);
        let command = crate::cli::Cli::command();
        let argument = command
            .find_subcommand("up")
            .unwrap()
            .get_arguments()
            .find(|argument| argument.get_id() == "trusted_proxies")
            .unwrap();
        assert_eq!(
            argument.get_env().and_then(|env| env.to_str()),
            Some("TRIBUTARY_TRUSTED_PROXIES")
        );
        assert_eq!(argument.get_value_delimiter(), Some(','));

        let flagged = Settings::resolve(&global(None, None), Some(&up)).unwrap();
        assert!(flagged.trusted_proxies.trusts(ip("10.1.2.3")));
        assert!(flagged.trusted_proxies.trusts(ip("fd00::1")));
        assert!(!flagged.trusted_proxies.trusts(ip("192.0.2.10")));

        let dir =
            std::env::temp_dir().join(format!("tributary-proxies-{}", store::random_token(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tributary.toml");
        std::fs::write(&path, "trusted_proxies = [\"192.0.2.10\"]\n").unwrap();
        let from_file = Settings::resolve(&global(Some(path.clone()), None), None).unwrap();
        assert!(from_file.trusted_proxies.trusts(ip("192.0.2.10")));
        let flags_win = Settings::resolve(&global(Some(path.clone()), None), Some(&up)).unwrap();
        assert!(
            !flags_win.trusted_proxies.trusts(ip("192.0.2.10")),
            "the flags replace the file's list"
        );

        let defaults = Settings::resolve(&global(None, None), None).unwrap();
        assert!(
            defaults.trusted_proxies.is_empty(),
            "no proxy is trusted by default"
        );
        let error = Settings::resolve(
            &global(None, None),
            Some(&up_args(&["--trusted-proxy", "proxy.example"])),
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("trusted_proxies"),
            "{error:#}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_master_secret_is_generated_once_privately_and_then_reused() {
        use secrecy::ExposeSecret;
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!("tributary-secret-{}", store::random_token(6)));
        let settings = Settings::resolve(&global(None, Some(dir.to_str().unwrap())), None).unwrap();
        let first = settings.master_secret().unwrap();
        let second = settings.master_secret().unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 64);
        let mode = std::fs::metadata(dir.join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(".secret"))
            .collect();
        assert!(leftovers.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    // The operational settings (crate::operations): metrics and the edge's limits.

    /// The edge's configuration as `up` builds it from `settings`.
    fn edge_config(settings: &Settings) -> edge::EdgeConfig {
        crate::operations::edge_config(
            &settings.operations,
            &settings.edge_hostnames,
            "127.0.0.1:0".parse().unwrap(),
        )
    }

    /// The settings of `tributary <args>` (`up` options when the command is `up`).
    fn resolve(args: &[&str]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("tributary").chain(args.iter().copied()))?;
        let up = match &cli.command {
            Command::Up(up) => Some(up.as_ref()),
            _ => None,
        };
        Settings::resolve(&cli.global, up)
    }

    fn config_file(text: &str) -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("tributary-ops-{}", store::random_token(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tributary.toml");
        std::fs::write(&path, text).unwrap();
        let text = path.to_str().unwrap().to_owned();
        (dir, text)
    }

    #[test]
    fn edge_limits_and_metrics_come_from_the_file_and_flags_and_reach_the_edge() {
        use secrecy::ExposeSecret;

        let defaults = resolve(&["up"]).unwrap();
        assert_eq!(
            defaults.operations.metrics_addr,
            crate::operations::DEFAULT_METRICS_ADDR.parse().unwrap()
        );
        assert!(defaults.operations.metrics_addr.ip().is_loopback());
        assert!(defaults.operations.metrics_token.is_none());
        let edge = edge_config(&defaults);
        let stock = edge::EdgeConfig::default();
        assert_eq!(
            format!("{:?}{:?}", edge.connections, edge.body_budget),
            format!("{:?}{:?}", stock.connections, stock.body_budget),
            "the edge's own defaults"
        );

        let (dir, path) = config_file(
            "metrics_addr = \"127.0.0.1:9999\"\nmetrics_token = \"from-the-file-0123456789abcdef\"\n\
             edge_idle_timeout_secs = 30\nedge_handshake_timeout_secs = 4\n\
             edge_max_connections_per_address = 16\nedge_body_budget_bytes = 1073741824\n\
             edge_tenant_body_budget_bytes = 67108864\n",
        );
        let from_file = resolve(&["--config", &path, "up"]).unwrap();
        let operations = &from_file.operations;
        assert_eq!(operations.metrics_addr.port(), 9999);
        assert_eq!(
            operations.metrics_token.as_ref().unwrap().expose_secret(),
            "from-the-file-0123456789abcdef"
        );
        let edge = edge_config(&from_file);
        assert_eq!(
            edge.connections.idle_timeout,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            edge.connections.handshake_timeout,
            std::time::Duration::from_secs(4)
        );
        assert_eq!(edge.connections.max_connections_per_address, 16);
        assert_eq!(edge.body_budget.total_bytes, 1 << 30);
        assert_eq!(edge.body_budget.tenant_bytes, 64 << 20);
        assert_eq!(
            edge.connections.first_request_timeout, stock.connections.first_request_timeout,
            "a key not given keeps the edge's default"
        );

        // Flags over the file.
        let flagged = resolve(&[
            "--config",
            &path,
            "up",
            "--metrics-addr",
            "127.0.0.1:0",
            "--edge-idle-timeout-secs",
            "90",
            "--edge-max-certified-connections",
            "100",
            "--edge-body-budget-wait-ms",
            "500",
        ])
        .unwrap();
        assert_eq!(flagged.operations.metrics_addr.port(), 0);
        let edge = edge_config(&flagged);
        assert_eq!(
            edge.connections.idle_timeout,
            std::time::Duration::from_secs(90)
        );
        assert_eq!(edge.connections.max_certified_connections, 100);
        assert_eq!(
            edge.connections.handshake_timeout,
            std::time::Duration::from_secs(4)
        );
        assert_eq!(edge.body_budget.wait, std::time::Duration::from_millis(500));
        assert!(
            !format!("{flagged:?}").contains("from-the-file-0123456789abcdef"),
            "the token is never printed"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn zero_and_absurd_limits_are_refused_naming_the_setting() {
        for (flag, value, named) in [
            (
                "--edge-idle-timeout-secs",
                "0",
                "edge_idle_timeout_secs (TRIBUTARY_EDGE_IDLE_TIMEOUT_SECS / --edge-idle-timeout-secs)",
            ),
            (
                "--edge-handshake-timeout-secs",
                "36000",
                "edge_handshake_timeout_secs",
            ),
            (
                "--edge-max-connections-per-address",
                "0",
                "edge_max_connections_per_address",
            ),
            (
                "--edge-max-anonymous-connections",
                "100000000",
                "edge_max_anonymous_connections",
            ),
            ("--edge-body-budget-bytes", "0", "edge_body_budget_bytes"),
            (
                "--edge-body-budget-bytes",
                "1099511627776",
                "edge_body_budget_bytes",
            ),
            (
                "--edge-tenant-body-budget-bytes",
                "1024",
                "edge_tenant_body_budget_bytes",
            ),
            (
                "--edge-tenant-body-budget-bytes",
                "536870912",
                "edge_tenant_body_budget_bytes",
            ),
            (
                "--edge-body-budget-wait-ms",
                "0",
                "edge_body_budget_wait_ms",
            ),
            (
                "--metrics-token",
                "only-twenty-three-chars",
                "metrics_token (TRIBUTARY_METRICS_TOKEN / --metrics-token)",
            ),
        ] {
            let error = resolve(&["up", flag, value]).unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains(named), "{flag} {value}: {message}");
            if flag == "--metrics-token" {
                assert!(
                    !message.contains(value),
                    "the token is not echoed: {message}"
                );
            }
        }
        // From the file as well.
        let (dir, path) = config_file("edge_max_connections_per_source = 0\n");
        let error = resolve(&["--config", &path, "up"]).unwrap_err();
        assert!(
            format!("{error:#}").contains("edge_max_connections_per_source"),
            "{error:#}"
        );
        std::fs::write(std::path::Path::new(&path), "edge_idle_timeout = 5\n").unwrap();
        let error = resolve(&["--config", &path, "up"]).unwrap_err();
        assert!(
            format!("{error:#}").contains("unknown field `edge_idle_timeout`"),
            "{error:#}"
        );
        // Negative numbers are not numbers of these settings.
        assert!(resolve(&["up", "--edge-idle-timeout-secs", "-1"]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_key_is_a_flag_of_up_with_its_environment_variable() {
        let command = Cli::command();
        let up = command.find_subcommand("up").expect("tributary up exists");
        let keys: Vec<&str> = ["metrics_addr", "metrics_token"]
            .into_iter()
            .chain(crate::operations::edge_keys())
            .collect();
        assert_eq!(keys.len(), 14);
        for key in keys {
            let flag = key.replace('_', "-");
            let argument = up
                .get_arguments()
                .find(|argument| argument.get_long() == Some(flag.as_str()))
                .unwrap_or_else(|| panic!("up has no --{flag}"));
            assert_eq!(
                argument.get_env().and_then(|env| env.to_str()),
                Some(format!("TRIBUTARY_{}", key.to_uppercase()).as_str()),
                "--{flag}"
            );
            // And the file takes the key: a zero is refused by name, not as an unknown field.
            if key != "metrics_addr" && key != "metrics_token" {
                let (dir, path) = config_file(&format!("{key} = 0\n"));
                let error = format!("{:#}", resolve(&["--config", &path, "up"]).unwrap_err());
                assert!(error.contains(&format!("{key} (TRIBUTARY_")), "{error}");
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        let token = up
            .get_arguments()
            .find(|argument| argument.get_long() == Some("metrics-token"))
            .unwrap();
        assert!(
            token.is_hide_env_values_set(),
            "the token's value is never shown"
        );
    }

    #[test]
    fn only_an_https_address_is_a_public_edge_url() {
        assert_eq!(edge_public_url(None).unwrap(), None);
        assert_eq!(edge_public_url(Some("  ".into())).unwrap(), None);
        for (given, kept) in [
            ("https://ingest.example.com", "https://ingest.example.com"),
            (
                "https://ingest.example.com:9443/",
                "https://ingest.example.com:9443",
            ),
            ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
        ] {
            assert_eq!(
                edge_public_url(Some(given.into())).unwrap().as_deref(),
                Some(kept)
            );
        }
        for refused in [
            "http://ingest.example.com",
            "ingest.example.com:8443",
            "https://",
            "https://:8443",
            "https://ingest.example.com/path",
            "https://user@ingest.example.com",
        ] {
            assert!(edge_public_url(Some(refused.into())).is_err(), "{refused}");
        }
    }
}
