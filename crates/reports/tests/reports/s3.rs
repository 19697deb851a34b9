//! The export store on an S3-compatible bucket: a real S3 API server (moto's, started by the
//! test on a free port) takes a run's file as a multipart upload, gives it back byte for byte,
//! lists it under the configured prefix only, and deletes it when it expires.

use std::process::Stdio;
use std::time::Duration;

use domain::Role;
use futures_util::TryStreamExt;
use reports::{ExportStore, Runner, S3Location};
use store::reports::Format;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ask, member, metric_report, metrics, tenant};

/// moto's S3 server, killed when dropped. `TRIBUTARY_TEST_MOTO_SERVER` names its program
/// (`scripts/test` installs it); `moto_server` on the PATH otherwise. A machine without it
/// fails the test: it never passes without an S3 server.
struct Moto {
    child: tokio::process::Child,
    port: u16,
}

impl Moto {
    async fn start() -> Self {
        let program = std::env::var("TRIBUTARY_TEST_MOTO_SERVER")
            .unwrap_or_else(|_| "moto_server".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {program} ({error}): install moto (pip install 'moto[server]') \
                     or set TRIBUTARY_TEST_MOTO_SERVER"
                )
            });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes a bucket (a plain `PUT /bucket`, which moto takes unsigned).
    async fn create_bucket(&self, bucket: &str) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        stream
            .write_all(
                format!(
                    "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n",
                    self.port
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn a_runs_file_goes_to_an_s3_bucket_and_comes_back_byte_for_byte() {
    let _shared = crate::SERIAL.read().await;
    let moto = Moto::start().await;
    moto.create_bucket("acme-exports").await;
    let location = S3Location::parse(
        "s3://acme-exports/tributary/reports",
        Some("eu-west-1".into()),
        Some(moto.endpoint()),
        "test-key".into(),
        secrecy::SecretString::from("test-secret".to_owned()),
    )
    .unwrap();
    assert!(!format!("{location:?}").contains("test-secret"));
    let exports = ExportStore::s3(&location).unwrap();

    let fixture = crate::fixture().await;
    let database = &fixture.database;
    let mut admin = fixture._test_database.admin().await;
    let acme = tenant(database, "Acme").await;
    let owner = member(database, acme, "owner@acme.example", Role::Owner).await;
    // Enough rows for several chunks of the runner (4 MiB) in one part.
    metrics(&mut admin, acme, 40, 360, 0.0).await;
    let run = ask(
        database,
        acme,
        owner,
        &metric_report("power to S3", Format::Csv),
        owner,
        Role::Owner,
    )
    .await
    .unwrap();
    let runner = Runner::new(database.clone(), exports.clone());
    let finished = runner.run_next().await.unwrap().unwrap();
    assert_eq!((finished.run, finished.failure.clone()), (run, None));
    assert_eq!(finished.rows, 40 * 360);

    // The same bytes through the store's own reading, and the object where the prefix says.
    let file = crate::file_of(database, &exports, acme, run).await;
    assert_eq!(file.len() as u64, finished.bytes);
    assert_eq!(
        file.iter().filter(|byte| **byte == b'\n').count() as u64,
        finished.rows + 1
    );
    let everything = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("acme-exports")
        .with_region("eu-west-1")
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_access_key_id("test-key")
        .with_secret_access_key("test-secret")
        .build()
        .unwrap();
    let listed: Vec<String> = object_store::ObjectStore::list(&everything, None)
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        listed,
        [format!("tributary/reports/tenants/{acme}/runs/{run}.csv")]
    );

    // Expired: deleted from the bucket.
    sqlx::query("update control.report_runs set expires_at = now() - interval '1 second'")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(runner.forget_expired().await.unwrap(), 1);
    let left: Vec<_> = object_store::ObjectStore::list(&everything, None)
        .try_collect()
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}
