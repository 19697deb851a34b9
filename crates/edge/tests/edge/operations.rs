//! Operations: what an agent reports about itself is masked at the edge before it is stored,
//! shown or logged.

use serde_json::json;

use crate::support::TestEdge;
use crate::tracing_spans::Captured;

#[tokio::test]
async fn an_agents_last_error_is_masked_before_it_is_stored_shown_or_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "debug,edge=trace,store=trace",
        ))
        .with_ansi(false)
        .finish();
    // A current-thread runtime: every task of this test logs here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let edge = TestEdge::start().await;
    let agent = edge.agent("Acme").await;
    let secrets = [
        "ada.lovelace@example.com",
        "4111 1111 1111 1111",
        "+44 20 7946 0958",
        "198.51.100.23",
        "hunter2-s3cret",
        "Lovelace Street 12",
        "Ada's vault",
    ];
    let last_error = format!(
        "duplicate key value violates unique constraint \"customers_email_key\"\n\
         DETAIL: Key (email)=({}) already exists.",
        secrets[0]
    );
    let warnings = [
        format!("card {} declined for row", secrets[1]),
        format!("phone {} invalid; peer {}", secrets[2], secrets[3]),
        format!("connect failed: password={} host=db", secrets[4]),
        format!("invalid input syntax for type integer: \"{}\"", secrets[5]),
        format!(
            "syntax error at or near '{}'",
            secrets[6].replace('\'', "''")
        ),
    ];
    let mut client = edge.client(Some(&agent.identity)).await.unwrap();
    let response = client
        .post_json(
            "/v1/status",
            &json!({
                "agent_version": "0.1.0", "source_kind": "postgres", "state": "failed",
                "spool_batches": 0, "spool_bytes": 0, "backpressure": false,
                "warnings": warnings, "last_error": last_error,
                "updated_at": "2026-12-05T08:00:00Z",
            }),
        )
        .await;
    assert_eq!(
        response.status,
        204,
        "{}",
        String::from_utf8_lossy(&response.body)
    );

    // Stored (and so shown: the sources page and the API read this very row) masked, with the
    // words that explain the error kept.
    let mut tx = edge.owner_tx(agent.tenant).await;
    let sources = store::sources::list_sources(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    let stored = serde_json::to_value(&sources).unwrap();
    let status = &stored[0]["agent"];
    assert_eq!(
        status["last_error"],
        "duplicate key value violates unique constraint \"customers_email_key\"\n\
         DETAIL: Key (email)=([masked]) already exists."
    );
    assert_eq!(
        status["warnings"],
        json!([
            "card [masked] declined for row",
            "phone [masked] invalid; peer [masked]",
            "connect failed: password=[masked] host=[masked]",
            "invalid input syntax for type integer: \"[masked]\"",
            "syntax error at or near '[masked]'",
        ])
    );
    let logs = captured.text();
    assert!(!logs.is_empty(), "the log was not captured");
    for secret in secrets {
        let escaped = secret.replace('\'', "''");
        assert!(
            !stored.to_string().contains(secret) && !stored.to_string().contains(&escaped),
            "{secret} stored"
        );
        assert!(
            !logs.contains(secret) && !logs.contains(&escaped),
            "{secret} logged"
        );
    }
}
