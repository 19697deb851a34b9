//! Pairing, client certificates and revocation, over real TLS.

use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use serde_json::json;

use crate::client::Identity;
use crate::support::{TestEdge, master_secret};

#[tokio::test]
async fn an_agent_pairs_once_and_then_sends_with_its_certificate() {
    let edge = TestEdge::start().await;
    let tenant = edge.tenant("Acme").await;
    let (source, token) = edge.source(tenant, "charging-db").await;

    let (identity, body) = edge.pair(&token).await.expect("pairing succeeds");
    assert_eq!(body["tenant_id"], json!(tenant));
    assert_eq!(body["source_id"], json!(source));
    assert_eq!(body["ca_certificate_pem"].as_str().unwrap(), edge.ca_pem);
    let not_after = time::OffsetDateTime::parse(
        body["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = not_after - time::OffsetDateTime::now_utc();
    assert!(
        lifetime > time::Duration::days(6) && lifetime <= time::Duration::days(7),
        "{lifetime}"
    );

    let mut client = edge.client(Some(&identity)).await.expect("mTLS handshake");
    let whoami = client.whoami.as_ref().unwrap();
    assert_eq!(whoami.status, 200);
    assert_eq!(whoami.json()["source_id"], json!(source));

    // The token is single use.
    let again = edge.pair(&token).await.unwrap_err();
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (401, "pairing_refused")
    );

    // Renewal over mTLS issues a new certificate for the same source.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let renewed = client
        .post_json("/v1/renew", &json!({ "csr_pem": csr }))
        .await;
    assert_eq!(
        renewed.status,
        200,
        "{}",
        String::from_utf8_lossy(&renewed.body)
    );
    let renewed_identity = Identity {
        certificate_pem: renewed.json()["certificate_pem"]
            .as_str()
            .unwrap()
            .to_owned(),
        key_pem: key.serialize_pem(),
    };
    let renewed_client = edge.client(Some(&renewed_identity)).await.unwrap();
    let whoami = renewed_client.whoami.as_ref().unwrap();
    assert_eq!(whoami.json()["source_id"], json!(source));

    // Pairing and renewal are in the tenant's audit chain.
    let mut tx = edge.owner_tx(tenant).await;
    let actions: Vec<String> = store::audit::list(&mut tx, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.action)
        .collect();
    for action in [
        "source.create",
        "source.pairing_token.issue",
        "source.pair",
        "source.certificate.renew",
    ] {
        assert!(
            actions.iter().any(|seen| seen == action),
            "{action} not audited: {actions:?}"
        );
    }
    let sources = store::sources::list_sources(&mut tx).await.unwrap();
    assert_eq!(sources[0].status, "active");
}

#[tokio::test]
async fn expired_foreign_and_tampered_tokens_are_refused() {
    let edge = TestEdge::start().await;
    let acme = edge.tenant("Acme").await;
    let globex = edge.tenant("Globex").await;
    let (_, expired) = edge.source(acme, "expired").await;
    let mut admin = edge.test_database.admin().await;
    sqlx::query("update control.pairing_tokens set expires_at = now() - interval '1 second'")
        .execute(&mut admin)
        .await
        .unwrap();
    let refused = edge.pair(&expired).await.unwrap_err();
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (401, "pairing_refused")
    );

    // Globex's token with Acme's tenant id in it (the secret no longer matches any row).
    let (_, globex_token) = edge.source(globex, "db").await;
    let parts: Vec<&str> = globex_token.split('.').collect();
    let forged = format!(
        "{}.{}.{}.{}",
        parts[0],
        acme.as_uuid().simple(),
        parts[2],
        parts[3]
    );
    let refused = edge.pair(&forged).await.unwrap_err();
    assert_eq!(refused.status, 401);
    let mut secret = parts[3].to_owned();
    secret.replace_range(0..2, if &secret[0..2] == "00" { "01" } else { "00" });
    let tampered = format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], secret);
    assert_eq!(edge.pair(&tampered).await.unwrap_err().status, 401);
    assert_eq!(edge.pair("garbage").await.unwrap_err().status, 401);
    // The untampered token still works: failed attempts did not consume it.
    assert!(edge.pair(&globex_token).await.is_ok());
}

fn self_signed_identity() -> Identity {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "intruder");
    params.distinguished_name = name;
    let certificate = params.self_signed(&key).unwrap();
    Identity {
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn certificates_not_issued_by_the_platform_or_expired_fail_the_handshake() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;

    assert!(
        edge.client(Some(&self_signed_identity())).await.is_err(),
        "self-signed accepted"
    );

    // A certificate from another CA that even carries a valid-looking source URI.
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut other_params = CertificateParams::default();
    other_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_issuer = rcgen::Issuer::new(other_params, other_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        edge::ca::source_uri(agent.tenant, agent.source)
            .try_into()
            .unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let foreign = Identity {
        certificate_pem: params.signed_by(&key, &other_issuer).unwrap().pem(),
        key_pem: key.serialize_pem(),
    };
    assert!(
        edge.client(Some(&foreign)).await.is_err(),
        "other CA accepted"
    );

    // Our own CA, but expired.
    let secrets = edge::SecretBox::new(&master_secret(), "ca-key");
    let ca = edge::CertificateAuthority::load_or_create(&edge.database.service, &secrets)
        .await
        .unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let (pem, _) = ca
        .sign_client_certificate(
            &csr,
            agent.tenant,
            agent.source,
            time::Duration::minutes(-10),
        )
        .unwrap();
    let expired = Identity {
        certificate_pem: pem,
        key_pem: key.serialize_pem(),
    };
    assert!(
        edge.client(Some(&expired)).await.is_err(),
        "expired certificate accepted"
    );

    // And the genuine one still works.
    let genuine = edge.client(Some(&agent.identity)).await.unwrap();
    assert_eq!(genuine.whoami.as_ref().unwrap().status, 200);

    // No certificate: pairing is reachable, everything else says a certificate is required.
    let mut anonymous = edge.client(None).await.unwrap();
    let response = anonymous
        .post_json("/v1/events", &json!({ "events": [agent.event(1)] }))
        .await;
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (401, "client_certificate_required")
    );
}

#[tokio::test]
async fn revoking_a_source_refuses_its_certificate_on_new_and_open_connections() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let mut open = edge.client(Some(&agent.identity)).await.unwrap();
    let accepted = open
        .post_json("/v1/events", &json!({ "events": [agent.event(1)] }))
        .await;
    assert_eq!(accepted.status, 200);

    let mut tx = edge.owner_tx(agent.tenant).await;
    store::sources::revoke_source(&mut tx, agent.source, "laptop stolen")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The open connection is closed by the edge within seconds, without sending anything.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !open.is_closed() {
        assert!(
            Instant::now() < deadline,
            "the open connection of a revoked source stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new connection handshakes (the certificate is still genuine) but its requests are refused
    // and the edge closes it.
    let fresh = edge.client(Some(&agent.identity)).await.unwrap();
    let refused = fresh.whoami.as_ref().unwrap();
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (403, "certificate_revoked")
    );
    let published = edge.published().await;
    assert_eq!(
        published.len(),
        1,
        "nothing after the revocation reached the bus"
    );

    // Revocation is final, even for the tenant's owner at the database.
    let mut tx = edge.owner_tx(agent.tenant).await;
    let revived = sqlx::query("update control.sources set status = 'active' where source_id = $1")
        .bind(agent.source.as_uuid())
        .execute(tx.connection_for_tests())
        .await;
    assert!(revived.is_err(), "a revoked source was brought back");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_paused_sources_batches_are_refused_with_source_paused_and_its_heartbeats_taken() {
    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let accepted = client
        .post_json("/v1/events", &json!({ "events": [agent.event(1)] }))
        .await;
    assert_eq!(accepted.status, 200);

    let mut tx = edge.owner_tx(agent.tenant).await;
    store::sources::pause_source(&mut tx, agent.source, Some("maintenance"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The edge's cached view of the source lives `cache_ttl` (200 ms here).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = client
        .post_json("/v1/events", &json!({ "events": [agent.event(2)] }))
        .await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (423, "source_paused")
    );
    // The heartbeat is still taken, on the same connection: the source's page stays live.
    let heartbeat = client
        .post_json(
            "/v1/status",
            &json!({
                "agent_version": "0.1.0", "source_kind": "postgres", "state": "paused",
                "spool_batches": 1, "spool_bytes": 512, "backpressure": false,
                "warnings": [], "last_error": null, "updated_at": "2026-12-06T03:00:00Z",
            }),
        )
        .await;
    assert_eq!(
        heartbeat.status,
        204,
        "{}",
        String::from_utf8_lossy(&heartbeat.body)
    );
    let mut tx = edge.owner_tx(agent.tenant).await;
    let source = store::sources::get_source(&mut tx, agent.source)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(source.agent.unwrap()["state"], "paused");
    assert_eq!(source.health.status.as_str(), "paused");
    assert_eq!(
        edge.published().await.len(),
        1,
        "nothing of the refused batch reached the bus"
    );

    // Resumed: the same batch is taken.
    let mut tx = edge.owner_tx(agent.tenant).await;
    store::sources::resume_source(&mut tx, agent.source)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let accepted = client
        .post_json("/v1/events", &json!({ "events": [agent.event(2)] }))
        .await;
    assert_eq!(accepted.status, 200);
    assert_eq!(edge.published().await.len(), 2);
}
