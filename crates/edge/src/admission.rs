//! Which connections the edge holds open: a cap per address, a bounded pool for connections
//! without a verified client certificate (the oldest idle one is closed to make room), and a
//! separate cap for agents' connections, so that idle, handshaking or slow clients cannot keep
//! an agent out.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::ConnectionLimits;
use crate::identity::ClientIdentity;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already holds `max_connections_per_address`.
    Address,
    /// The anonymous pool is full of connections with a request in flight.
    AnonymousPool,
    /// `max_certified_connections` are open.
    Certified,
    /// Its source already holds `max_connections_per_source`.
    Source,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Address => "address",
            Refusal::AnonymousPool => "anonymous_pool",
            Refusal::Certified => "certified",
            Refusal::Source => "source",
        }
    }
}

/// What a connection's task and its requests share: whether it must close to make room, and
/// when it last did something.
#[derive(Debug)]
pub struct ConnectionActivity {
    opened: Instant,
    shed: Notify,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds from `opened` to the last request's start or end.
    last_active_millis: AtomicU64,
}

impl ConnectionActivity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            shed: Notify::new(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_active_millis: AtomicU64::new(0),
        })
    }

    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Completes once the admission asked this connection to close to make room.
    pub async fn shed(&self) {
        self.shed.notified().await
    }

    /// A request started; it counts as in flight until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.touch();
        RequestGuard(self.clone())
    }

    pub fn has_had_request(&self) -> bool {
        self.requests.load(Ordering::Acquire) > 0
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When the connection became (or, with a request in flight, last could have become) idle.
    pub fn last_active(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_active_millis.load(Ordering::Acquire))
    }

    fn touch(&self) {
        let millis = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_millis.fetch_max(millis, Ordering::AcqRel);
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct RequestGuard(Arc<ConnectionActivity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The edge's open connections, by address, pool and source.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    per_address: HashMap<IpAddr, usize>,
    /// Connections without a verified certificate, oldest first.
    anonymous: BTreeMap<u64, Arc<ConnectionActivity>>,
    next_anonymous: u64,
    certified: usize,
    per_source: HashMap<ClientIdentity, usize>,
}

/// IPv4 addresses count alone; IPv6 ones by their /64, which one host usually holds whole.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("admission lock")
    }

    /// Admits a just-accepted connection into the anonymous pool, where it stays until it
    /// shows a verified certificate. When the pool is full, the oldest connection in it with no
    /// request in flight is told to close (and leaves the pool at once) to make room.
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        activity: &Arc<ConnectionActivity>,
    ) -> Result<(AddressTicket, AnonymousTicket), Refusal> {
        let address = address_key(peer);
        let mut state = self.state();
        let count = state.per_address.get(&address).copied().unwrap_or(0);
        if count >= self.limits.max_connections_per_address {
            return Err(Refusal::Address);
        }
        if state.anonymous.len() >= self.limits.max_anonymous_connections {
            let oldest_idle = state
                .anonymous
                .iter()
                .find(|(_, connection)| connection.is_idle())
                .map(|(id, _)| *id);
            let Some(id) = oldest_idle else {
                return Err(Refusal::AnonymousPool);
            };
            if let Some(shed) = state.anonymous.remove(&id) {
                // A permit is stored if its task is not waiting yet: it closes when it looks.
                shed.shed.notify_one();
                metrics::counter!("tributary_edge_connections_shed_total").increment(1);
            }
        }
        *state.per_address.entry(address).or_default() += 1;
        let id = state.next_anonymous;
        state.next_anonymous += 1;
        state.anonymous.insert(id, activity.clone());
        Ok((
            AddressTicket {
                admission: self.clone(),
                address,
            },
            AnonymousTicket {
                admission: self.clone(),
                id,
            },
        ))
    }

    /// Moves a connection whose handshake verified a client certificate out of the anonymous
    /// pool (dropping `anonymous`), within the certified caps.
    pub fn certify(
        self: &Arc<Self>,
        anonymous: AnonymousTicket,
        identity: &ClientIdentity,
    ) -> Result<CertifiedTicket, Refusal> {
        let mut state = self.state();
        if state.certified >= self.limits.max_certified_connections {
            return Err(Refusal::Certified);
        }
        let count = state.per_source.get(identity).copied().unwrap_or(0);
        if count >= self.limits.max_connections_per_source {
            return Err(Refusal::Source);
        }
        state.certified += 1;
        *state.per_source.entry(identity.clone()).or_default() += 1;
        state.anonymous.remove(&anonymous.id);
        drop(state);
        drop(anonymous);
        Ok(CertifiedTicket {
            admission: self.clone(),
            identity: identity.clone(),
        })
    }

    /// Connections in the anonymous pool now.
    #[cfg(test)]
    fn anonymous_count(&self) -> usize {
        self.state().anonymous.len()
    }
}

/// Holds a connection's place in its address's count.
#[derive(Debug)]
pub struct AddressTicket {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Drop for AddressTicket {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        if let Some(count) = state.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                state.per_address.remove(&self.address);
            }
        }
    }
}

/// Holds a connection's place in the anonymous pool (unless it was shed).
#[derive(Debug)]
pub struct AnonymousTicket {
    admission: Arc<Admission>,
    id: u64,
}

impl Drop for AnonymousTicket {
    fn drop(&mut self) {
        self.admission.state().anonymous.remove(&self.id);
    }
}

/// Holds a certified connection's place.
#[derive(Debug)]
pub struct CertifiedTicket {
    admission: Arc<Admission>,
    identity: ClientIdentity,
}

impl Drop for CertifiedTicket {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        state.certified -= 1;
        if let Some(count) = state.per_source.get_mut(&self.identity) {
            *count -= 1;
            if *count == 0 {
                state.per_source.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(anonymous: usize, per_address: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_anonymous_connections: anonymous,
            max_connections_per_address: per_address,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn a_full_pool_sheds_its_oldest_idle_connection() {
        let admission = Admission::new(limits(2, 10));
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let (first, second, third) = (
            ConnectionActivity::new(),
            ConnectionActivity::new(),
            ConnectionActivity::new(),
        );
        let _a = admission.admit(peer, &first).unwrap();
        let _busy = first.begin_request();
        let _b = admission.admit(peer, &second).unwrap();
        let _c = admission.admit(peer, &third).unwrap();
        assert_eq!(admission.anonymous_count(), 2);
        // The oldest, `first`, has a request in flight: `second` was the one shed.
        let state = admission.state();
        assert!(state.anonymous.values().any(|c| Arc::ptr_eq(c, &first)));
        assert!(!state.anonymous.values().any(|c| Arc::ptr_eq(c, &second)));
    }

    #[test]
    fn a_pool_full_of_busy_connections_refuses_new_ones() {
        let admission = Admission::new(limits(1, 10));
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let first = ConnectionActivity::new();
        let _a = admission.admit(peer, &first).unwrap();
        let _busy = first.begin_request();
        let refused = admission
            .admit(peer, &ConnectionActivity::new())
            .unwrap_err();
        assert_eq!(refused, Refusal::AnonymousPool);
    }

    #[test]
    fn addresses_are_capped_and_ipv6_counts_by_its_64() {
        let admission = Admission::new(limits(100, 2));
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let other_64: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let first = admission.admit(one, &ConnectionActivity::new()).unwrap();
        let _second = admission
            .admit(same_64, &ConnectionActivity::new())
            .unwrap();
        let refused = admission
            .admit(one, &ConnectionActivity::new())
            .unwrap_err();
        assert_eq!(refused, Refusal::Address);
        admission
            .admit(other_64, &ConnectionActivity::new())
            .unwrap();
        drop(first);
        admission.admit(one, &ConnectionActivity::new()).unwrap();
    }
}
