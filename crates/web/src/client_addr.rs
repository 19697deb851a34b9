//! The client's address as throttles and the audit log see it: the socket's peer, unless that
//! peer is one of the platform's configured trusted proxies ([`TrustedProxies`]), in which case
//! the address that proxy put in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is a list every proxy appends its own peer to, so only its right end can be
//! believed: walking it from the right, each address a trusted proxy wrote is skipped, and the
//! first address that is not a trusted proxy's is the client. Whatever stands to its left was
//! written by that client and could be anything. Without trusted proxies, or when the peer is not
//! one, the header is ignored: anyone can send it.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::AppState;

/// The header a proxy names the client in.
const FORWARDED_FOR: &str = "x-forwarded-for";
/// Addresses of a longer header are not looked at: no real chain of proxies is that deep.
const MAX_HOPS: usize = 32;

/// One trusted address or network (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// Why a trusted proxy entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or network (like 10.0.0.1, 10.0.0.0/8 or fd00::/8)")]
pub struct InvalidProxy(String);

impl FromStr for Network {
    type Err = InvalidProxy;

    fn from_str(text: &str) -> Result<Self, InvalidProxy> {
        let invalid = || InvalidProxy(text.to_owned());
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = IpAddr::from_str(addr)
            .map_err(|_| invalid())?
            .to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(invalid)?,
            None => bits,
        };
        Ok(Self { addr, prefix })
    }
}

/// The proxies whose `X-Forwarded-For` is believed (the `trusted_proxies` setting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// No proxy is trusted: the client is always the socket's peer.
    pub fn none() -> Self {
        Self::default()
    }

    /// Each entry an address or a network in CIDR notation.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidProxy> {
        entries
            .iter()
            .map(|entry| entry.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `addr` is one of the trusted proxies.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.0.iter().any(|network| network.contains(addr))
    }

    /// The client of a request that came from `peer` with `headers`: `peer` itself unless it is
    /// a trusted proxy; then, walking `X-Forwarded-For` from the right, the first address that is
    /// not a trusted proxy's (or the leftmost, when every one is). A header that cannot be read
    /// where it is walked gives `peer`.
    pub fn of_request(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops = Vec::new();
        for value in headers.get_all(FORWARDED_FOR) {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            hops.extend(value.split(','));
        }
        let mut client = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            let Some(addr) = parse_hop(hop) else {
                return peer;
            };
            client = addr;
            if !self.trusts(addr) {
                break;
            }
        }
        client
    }
}

/// One address of `X-Forwarded-For`: an IP, maybe with a port (`[v6]:port` or `v4:port`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|addr| addr.to_canonical())
}

/// The request's client address (see the module), for throttles, sessions and the audit log;
/// `None` only when the server was not started with peer addresses (never in `crate::serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    pub fn of_parts(parts: &Parts, trusted: &TrustedProxies) -> Self {
        Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| trusted.of_request(info.0, &parts.headers)),
        )
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of_parts(parts, &state.trusted_proxies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn peer(addr: &str) -> SocketAddr {
        SocketAddr::new(addr.parse().unwrap(), 40_000)
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_spoofed_header_from_an_untrusted_peer_is_ignored() {
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            TrustedProxies::none().of_request(peer("203.0.113.9"), &headers),
            ip("203.0.113.9"),
            "no trusted proxies: the socket's peer"
        );
        let trusted = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert_eq!(
            trusted.of_request(peer("203.0.113.9"), &headers),
            ip("203.0.113.9"),
            "a peer that is not a trusted proxy cannot name another client"
        );
        assert_eq!(
            trusted.of_request(peer("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3"),
            "a trusted proxy that names no one is the client itself"
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_from_the_right_to_the_first_untrusted_address() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.10"]).unwrap();
        // The client claimed to be 198.51.100.1; the first proxy (192.0.2.10) saw 203.0.113.5
        // and the second (10.0.0.2, our peer) saw 192.0.2.10.
        let headers = forwarded(&["198.51.100.1, 203.0.113.5", "192.0.2.10"]);
        assert_eq!(
            trusted.of_request(peer("10.0.0.2"), &headers),
            ip("203.0.113.5")
        );
        // Only the trusted hops are skipped: an untrusted one in the middle is the client.
        let headers = forwarded(&["203.0.113.5, 198.51.100.1, 10.9.9.9"]);
        assert_eq!(
            trusted.of_request(peer("10.0.0.2"), &headers),
            ip("198.51.100.1")
        );
        // Every hop trusted: the leftmost is the client.
        let headers = forwarded(&["10.4.4.4, 192.0.2.10"]);
        assert_eq!(
            trusted.of_request(peer("10.0.0.2"), &headers),
            ip("10.4.4.4")
        );
    }

    #[test]
    fn ipv6_peers_networks_and_hops_and_ipv4_mapped_peers() {
        let trusted = TrustedProxies::parse(&["fd00::/8", "127.0.0.1"]).unwrap();
        let headers = forwarded(&["2001:db8::1, fd12::3"]);
        assert_eq!(
            trusted.of_request(peer("fd00::1"), &headers),
            ip("2001:db8::1")
        );
        assert_eq!(
            trusted.of_request(peer("fe80::1"), &headers),
            ip("fe80::1"),
            "outside the network"
        );
        let headers = forwarded(&["[2001:db8::2]:5555"]);
        assert_eq!(
            trusted.of_request(peer("::ffff:127.0.0.1"), &headers),
            ip("2001:db8::2"),
            "an IPv4-mapped peer is its IPv4 address; a hop may carry a port"
        );
        assert_eq!(
            TrustedProxies::none().of_request(peer("::ffff:192.0.2.1"), &HeaderMap::new()),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn garbage_gives_the_socket_address_and_bad_settings_are_refused() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        for garbage in ["", "not an address", "203.0.113.5, <script>", "1.2.3.4.5"] {
            assert_eq!(
                trusted.of_request(peer("10.0.0.2"), &forwarded(&[garbage])),
                ip("10.0.0.2"),
                "{garbage:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.5\xff").unwrap(),
        );
        assert_eq!(
            trusted.of_request(peer("10.0.0.2"), &headers),
            ip("10.0.0.2")
        );
        // Garbage to the left of the client is the client's own writing, and does not matter.
        assert_eq!(
            trusted.of_request(peer("10.0.0.2"), &forwarded(&["junk, 203.0.113.5"])),
            ip("203.0.113.5")
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "example.com", "10.0.0.0/", ""] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad:?}");
        }
        assert!(TrustedProxies::parse(&["0.0.0.0/0", "::/0"]).is_ok());
    }
}
