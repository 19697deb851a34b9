//! The edge's address: an `https://host[:port][/]` URL, read once into what connecting needs.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::ServerName;

use crate::ClientError;

/// Where the edge listens. Only `https` URLs without a path (other than `/`), query or
/// credentials are accepted: the client adds the API's paths itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeUrl {
    /// The host as written, without IPv6 brackets.
    host: String,
    port: u16,
}

impl EdgeUrl {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The value of the `Host` header.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The name the edge's certificate must be valid for: a DNS name or an IP address.
    pub(crate) fn server_name(&self) -> Result<ServerName<'static>, ClientError> {
        ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::InvalidUrl("the host is not a valid DNS name or IP address"))
    }
}

impl FromStr for EdgeUrl {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uri: hyper::Uri = text
            .trim()
            .parse()
            .map_err(|_| ClientError::InvalidUrl("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::InvalidUrl(
                "the edge URL must start with https://",
            ));
        }
        let authority = uri
            .authority()
            .ok_or(ClientError::InvalidUrl("the URL names no host"))?;
        if authority.as_str().contains('@') {
            return Err(ClientError::InvalidUrl(
                "the edge URL must not carry credentials",
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(ClientError::InvalidUrl(
                "the edge URL must not have a path or query: give https://host:port",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(ClientError::InvalidUrl("the URL names no host"));
        }
        let url = Self {
            host,
            port: authority.port_u16().unwrap_or(443),
        };
        url.server_name()?;
        Ok(url)
    }
}

impl fmt::Display for EdgeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}/", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_https_urls_and_refuses_the_rest() {
        let url: EdgeUrl = "https://127.0.0.1:8443/".parse().unwrap();
        assert_eq!((url.host(), url.port()), ("127.0.0.1", 8443));
        assert_eq!(url.to_string(), "https://127.0.0.1:8443/");

        let url: EdgeUrl = "https://edge.example.com".parse().unwrap();
        assert_eq!((url.host(), url.port()), ("edge.example.com", 443));
        assert_eq!(url.authority(), "edge.example.com:443");

        let url: EdgeUrl = "https://[::1]:9000".parse().unwrap();
        assert_eq!((url.host(), url.port()), ("::1", 9000));
        assert_eq!(url.authority(), "[::1]:9000");
        assert!(matches!(
            url.server_name().unwrap(),
            ServerName::IpAddress(_)
        ));

        for bad in [
            "http://127.0.0.1:8443",
            "127.0.0.1:8443",
            "https://127.0.0.1:8443/v1/events",
            "https://127.0.0.1:8443/?x=1",
            "https://user:pw@edge.example.com/",
            "",
        ] {
            assert!(bad.parse::<EdgeUrl>().is_err(), "{bad:?} was accepted");
        }
    }
}
