//! A running edge on a fresh database with the embedded bus, and helpers to make agents.

use std::net::SocketAddr;
use std::time::Duration;

use bus::{Bus, Consumer};
use domain::{EventId, Lsn, Plan, Role, SourceId, TenantAttributes, TenantId, UserId};
use edge::{Edge, EdgeConfig};
use rcgen::{CertificateParams, KeyPair};
use secrecy::SecretString;
use store::{Actor, Database, Scope, TenantTx};
use test_support::TestDatabase;

use crate::client::{Client, Identity};

pub struct TestEdge {
    pub test_database: TestDatabase,
    pub database: Database,
    pub bus: bus::EmbeddedBus,
    pub addr: SocketAddr,
    pub ca_pem: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn master_secret() -> SecretString {
    SecretString::from("test master secret".to_owned())
}

impl TestEdge {
    pub async fn start() -> Self {
        Self::start_with(EdgeConfig::default()).await
    }

    pub async fn start_with(config: EdgeConfig) -> Self {
        Self::start_watching(config, &[]).await
    }

    /// An edge with backpressure on: the lag of `groups` is looked at every 100 ms.
    pub async fn start_watching(mut config: EdgeConfig, groups: &[&str]) -> Self {
        let test_database = TestDatabase::new().await;
        let database = test_database.connect().await;
        let bus = bus::EmbeddedBus::open(database.service.clone(), 4)
            .await
            .unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.cache_ttl = Duration::from_millis(200);
        let edge = Edge::bind(
            config,
            database.service.clone(),
            bus.clone(),
            &master_secret(),
        )
        .await
        .expect("bind the edge");
        let edge = if groups.is_empty() {
            edge
        } else {
            edge.watch_lag(bus::lag::LagWatch::spawn(
                bus.clone(),
                groups.iter().map(|group| (*group).to_owned()).collect(),
                Duration::from_millis(100),
            ))
        };
        let addr = edge.local_addr().unwrap();
        let ca_pem = edge.ca_certificate_pem().to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(edge.run(async move {
            let _ = stopped.await;
        }));
        Self {
            test_database,
            database,
            bus,
            addr,
            ca_pem,
            _stop: stop,
        }
    }

    pub async fn tenant(&self, name: &str) -> TenantId {
        let attributes = TenantAttributes::parse(name, Plan::Team, "energy", "eu").unwrap();
        store::control::create_tenant(&self.database.app, Actor::Cli("test".into()), &attributes)
            .await
            .unwrap()
            .tenant_id
    }

    pub async fn owner_tx(&self, tenant: TenantId) -> TenantTx {
        TenantTx::begin(
            &self.database.app,
            Scope::Member {
                tenant,
                user: UserId::new_random(),
                role: Role::Owner,
            },
        )
        .await
        .unwrap()
    }

    /// Creates a source and returns its id and pairing token.
    pub async fn source(&self, tenant: TenantId, name: &str) -> (SourceId, String) {
        let mut tx = self.owner_tx(tenant).await;
        let (source, token) = store::sources::create_source(&mut tx, name, "simulator")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        (source.source_id, token.token)
    }

    pub async fn client(&self, identity: Option<&Identity>) -> Result<Client, String> {
        Client::connect(self.addr, &self.ca_pem, identity).await
    }

    /// Pairs with `token` using a freshly generated key, as the agent does.
    pub async fn pair(
        &self,
        token: &str,
    ) -> Result<(Identity, serde_json::Value), crate::client::Response> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let mut client = self.client(None).await.unwrap();
        let response = client
            .post_json(
                "/v1/pair",
                &serde_json::json!({ "token": token, "csr_pem": csr }),
            )
            .await;
        if response.status != 200 {
            return Err(response);
        }
        let body = response.json();
        Ok((
            Identity {
                certificate_pem: body["certificate_pem"].as_str().unwrap().to_owned(),
                key_pem: key.serialize_pem(),
            },
            body,
        ))
    }

    /// A paired source: tenant, source and credentials.
    pub async fn agent(&self, tenant_name: &str) -> Agent {
        let tenant = self.tenant(tenant_name).await;
        let (source, token) = self.source(tenant, "db").await;
        let (identity, _) = self.pair(&token).await.unwrap_or_else(|response| {
            panic!(
                "pairing failed: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )
        });
        Agent {
            tenant,
            source,
            identity,
        }
    }

    /// Everything on the bus so far, as (tenant, event id, payload JSON), read by a fresh group.
    pub async fn published(&self) -> Vec<(TenantId, EventId, serde_json::Value)> {
        let group = format!("probe-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = self.bus.consumer(&group, None).await.unwrap();
        let mut seen = Vec::new();
        loop {
            let batch = consumer
                .next_batch(10_000, Duration::from_millis(300))
                .await
                .unwrap();
            if batch.is_empty() {
                return seen;
            }
            for delivery in batch {
                let payload = serde_json::from_slice(&delivery.message.payload).unwrap();
                seen.push((delivery.message.tenant, delivery.message.id, payload));
            }
        }
    }
}

pub struct Agent {
    pub tenant: TenantId,
    pub source: SourceId,
    pub identity: Identity,
}

impl Agent {
    /// A valid event of this source: insert of row `n` into public.devices.
    pub fn event(&self, n: u32) -> serde_json::Value {
        event_for(self.source, n)
    }
}

pub fn event_for(source: SourceId, n: u32) -> serde_json::Value {
    // An hour before the test run started (the same for every call, so event `n` always has the
    // same id), within the edge's commit-time window whatever day the tests run.
    static BASE_MILLIS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE_MILLIS.get_or_init(|| {
        let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        (hour_ago.unix_timestamp_nanos() / 1_000_000) as i64
    });
    let millis = base + i64::from(n);
    let lsn = Lsn(0x1_0000_0000 + u64::from(n) * 64);
    let event_time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap();
    serde_json::json!({
        "event_id": EventId::derive(source, millis, lsn, 0),
        "op": "insert",
        "schema": "public",
        "table": "devices",
        "lsn": lsn,
        "seq": 0,
        "xid": 1000 + n,
        "event_time": event_time.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "key": { "id": n },
        "after": { "id": n, "name": format!("device {n}"), "email": format!("owner{n}@example.com") },
    })
}
