//! Which bus to run and how, parsed from one setting string:
//!
//! ```text
//! embedded                                  the default: the log lives in PostgreSQL
//! embedded?partitions=32
//! nats://nats-1:4222,nats://nats-2:4222?replicas=3&duplicate_window=2m&ack_wait=30s
//! ```
//!
//! Options (after `?`, joined with `&`): `partitions` (both; default 16, fixed for the life of
//! the bus's storage), and for NATS `stream` (default `TRIBUTARY_EVENTS`), `subjects` (the
//! subject prefix, default `cdc.events`; partition `p` is `<prefix>.<p>`), `duplicate_window`
//! (default 2m), `replicas` (default 1; 3 in production), `ack_wait` (default 30s) and `max_age`
//! (default 0 = keep messages until removed by other limits). Durations are a number with `ms`,
//! `s`, `m`, `h` or `d`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::BusError;

/// The partition count unless configured otherwise.
pub const DEFAULT_PARTITIONS: u32 = 16;
const MAX_PARTITIONS: u32 = 4096;

/// The whole bus setting.
#[derive(Clone, PartialEq, Eq)]
pub struct BusConfig {
    pub partitions: u32,
    pub backend: Backend,
}

/// Which implementation.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// [`crate::EmbeddedBus`], on the platform database.
    Embedded,
    /// [`crate::NatsBus`], on a NATS JetStream server or cluster.
    Nats(NatsConfig),
}

/// Where and how the NATS bus keeps its stream.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URLs, comma-separated (`nats://` or `tls://`); may carry credentials.
    pub servers: String,
    pub stream: String,
    /// Partition `p` is subject `<subject_prefix>.<p>`.
    pub subject_prefix: String,
    /// Re-publishing an id within this window adds nothing (JetStream `duplicate_window`).
    pub duplicate_window: Duration,
    /// Stream replicas: 1 for development, 3 for production.
    pub replicas: usize,
    /// How long a delivered, unacked message waits before the server delivers it again.
    pub ack_wait: Duration,
    /// Messages older than this are removed; zero keeps them (other limits aside).
    pub max_age: Duration,
}

impl NatsConfig {
    /// The defaults for a server list.
    pub fn new(servers: impl Into<String>) -> Self {
        Self {
            servers: servers.into(),
            stream: "TRIBUTARY_EVENTS".into(),
            subject_prefix: "cdc.events".into(),
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_age: Duration::ZERO,
        }
    }

    /// The subject of partition `partition`.
    pub fn subject(&self, partition: u32) -> String {
        format!("{}.{partition}", self.subject_prefix)
    }

    fn validate(&self) -> Result<(), BusError> {
        let invalid = |message: String| Err(BusError::Config(message));
        let name_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        };
        if !name_ok(&self.stream) {
            return invalid(format!(
                "NATS stream name {:?} must be 1 to 64 of A-Z a-z 0-9 _ -",
                self.stream
            ));
        }
        if self.subject_prefix.split('.').any(|token| !name_ok(token)) {
            return invalid(format!(
                "NATS subject prefix {:?} must be dot-separated tokens of A-Z a-z 0-9 _ -",
                self.subject_prefix
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!(
                "NATS replicas must be 1 to 5, got {}",
                self.replicas
            ));
        }
        if self.duplicate_window.is_zero() {
            return invalid("the NATS duplicate window must be longer than zero".into());
        }
        if self.ack_wait < Duration::from_secs(1) {
            return invalid("the NATS ack wait must be at least 1s".into());
        }
        if self.servers.split(',').any(|server| {
            let server = server.trim();
            !(server.starts_with("nats://") || server.starts_with("tls://")) || server.len() < 8
        }) {
            return invalid("NATS servers must be nats:// or tls:// URLs".into());
        }
        Ok(())
    }

    /// The server list with any credentials replaced by `***`.
    pub fn redacted_servers(&self) -> String {
        self.servers
            .split(',')
            .map(|server| {
                let server = server.trim();
                match (server.split_once("://"), server.rfind('@')) {
                    (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &server[at..]),
                    _ => server.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            partitions: DEFAULT_PARTITIONS,
            backend: Backend::Embedded,
        }
    }
}

impl FromStr for BusConfig {
    type Err = BusError;

    fn from_str(setting: &str) -> Result<Self, Self::Err> {
        let setting = setting.trim();
        let (base, options) = setting.split_once('?').unwrap_or((setting, ""));
        let mut partitions = DEFAULT_PARTITIONS;
        let mut nats = match base {
            "" | "embedded" => None,
            servers => Some(NatsConfig::new(servers)),
        };
        for option in options.split('&').filter(|option| !option.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| BusError::Config(format!("bus option {option:?} needs a value")))?;
            match (key, nats.as_mut()) {
                ("partitions", _) => partitions = parse_number(key, value)?,
                ("stream", Some(nats)) => nats.stream = value.to_owned(),
                ("subjects", Some(nats)) => nats.subject_prefix = value.to_owned(),
                ("duplicate_window", Some(nats)) => {
                    nats.duplicate_window = parse_duration(key, value)?
                }
                ("replicas", Some(nats)) => nats.replicas = parse_number(key, value)?,
                ("ack_wait", Some(nats)) => nats.ack_wait = parse_duration(key, value)?,
                ("max_age", Some(nats)) => nats.max_age = parse_duration(key, value)?,
                _ => {
                    return Err(BusError::Config(format!(
                        "unknown bus option {key:?} for {}",
                        if nats.is_some() {
                            "NATS"
                        } else {
                            "the embedded bus"
                        }
                    )));
                }
            }
        }
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(BusError::Config(format!(
                "bus partitions must be 1 to {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        let backend = match nats {
            None => Backend::Embedded,
            Some(nats) => {
                nats.validate()?;
                Backend::Nats(nats)
            }
        };
        Ok(Self {
            partitions,
            backend,
        })
    }
}

/// The canonical setting string, credentials redacted.
impl fmt::Display for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Embedded => write!(f, "embedded?partitions={}", self.partitions),
            Backend::Nats(nats) => write!(
                f,
                "{}?partitions={}&stream={}&subjects={}&duplicate_window={}&replicas={}\
                 &ack_wait={}&max_age={}",
                nats.redacted_servers(),
                self.partitions,
                nats.stream,
                nats.subject_prefix,
                format_duration(nats.duplicate_window),
                nats.replicas,
                format_duration(nats.ack_wait),
                format_duration(nats.max_age),
            ),
        }
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BusConfig({self})")
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Embedded => f.write_str("Embedded"),
            Backend::Nats(nats) => f.debug_tuple("Nats").field(nats).finish(),
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.redacted_servers())
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("duplicate_window", &self.duplicate_window)
            .field("replicas", &self.replicas)
            .field("ack_wait", &self.ack_wait)
            .field("max_age", &self.max_age)
            .finish()
    }
}

fn parse_number<T: FromStr>(key: &str, value: &str) -> Result<T, BusError> {
    value
        .parse()
        .map_err(|_| BusError::Config(format!("bus option {key} must be a number, got {value:?}")))
}

fn parse_duration(key: &str, value: &str) -> Result<Duration, BusError> {
    let invalid = || {
        BusError::Config(format!(
            "bus option {key} must be a duration like 500ms, 30s, 2m, 1h or 7d, got {value:?}"
        ))
    };
    let split = value
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let millis = match unit {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        "d" => number.checked_mul(86_400_000),
        _ => None,
    }
    .ok_or_else(invalid)?;
    Ok(Duration::from_millis(millis))
}

fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_is_the_default() {
        for setting in ["", "embedded", " embedded "] {
            let config: BusConfig = setting.parse().unwrap();
            assert_eq!(config, BusConfig::default());
            assert_eq!(config.partitions, 16);
        }
        let config: BusConfig = "embedded?partitions=32".parse().unwrap();
        assert_eq!(config.partitions, 32);
        assert_eq!(config.backend, Backend::Embedded);
    }

    #[test]
    fn nats_with_defaults_and_options() {
        let config: BusConfig = "nats://127.0.0.1:4222".parse().unwrap();
        let Backend::Nats(nats) = &config.backend else {
            panic!("expected NATS, got {config:?}");
        };
        assert_eq!(config.partitions, 16);
        assert_eq!(nats.servers, "nats://127.0.0.1:4222");
        assert_eq!(nats.stream, "TRIBUTARY_EVENTS");
        assert_eq!(nats.subject(3), "cdc.events.3");
        assert_eq!(nats.duplicate_window, Duration::from_secs(120));
        assert_eq!(nats.replicas, 1);
        assert_eq!(nats.ack_wait, Duration::from_secs(30));

        let config: BusConfig = "nats://a:4222,tls://b:4222?partitions=8&stream=EV&subjects=t.ev\
                                 &duplicate_window=5m&replicas=3&ack_wait=1500ms&max_age=7d"
            .parse()
            .unwrap();
        let Backend::Nats(nats) = &config.backend else {
            panic!("expected NATS, got {config:?}");
        };
        assert_eq!(config.partitions, 8);
        assert_eq!(nats.servers, "nats://a:4222,tls://b:4222");
        assert_eq!(nats.stream, "EV");
        assert_eq!(nats.subject(7), "t.ev.7");
        assert_eq!(nats.duplicate_window, Duration::from_secs(300));
        assert_eq!(nats.replicas, 3);
        assert_eq!(nats.ack_wait, Duration::from_millis(1500));
        assert_eq!(nats.max_age, Duration::from_secs(7 * 86_400));
        // Display is canonical and parses back to the same configuration.
        assert_eq!(config.to_string().parse::<BusConfig>().unwrap(), config);
    }

    #[test]
    fn bad_settings_are_refused() {
        for setting in [
            "embedded?partitions=0",
            "embedded?partitions=5000",
            "embedded?partitions=x",
            "embedded?stream=X",
            "embedded?partitions",
            "kafka://x:9092",
            "nats://x:4222?replicas=0",
            "nats://x:4222?stream=a.b",
            "nats://x:4222?subjects=a..b",
            "nats://x:4222?subjects=a.*",
            "nats://x:4222?duplicate_window=0s",
            "nats://x:4222?ack_wait=10ms",
            "nats://x:4222?ack_wait=3w",
            "nats://x:4222?colour=blue",
        ] {
            let error = setting.parse::<BusConfig>().unwrap_err();
            assert!(matches!(error, BusError::Config(_)), "{setting}: {error:?}");
        }
    }

    #[test]
    fn credentials_are_never_printed() {
        let config: BusConfig = "nats://user:hunter2@a:4222,nats://s3cret@b:4222"
            .parse()
            .unwrap();
        for text in [config.to_string(), format!("{config:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("nats://***@a:4222"), "{text}");
        }
    }
}
