//! The platform behind a reverse proxy started by the test: with the proxy trusted, the client
//! address throttles and sessions see is the one the proxy names in `X-Forwarded-For`, never one
//! the client names itself.

use std::net::IpAddr;

use domain::Role;
use test_support::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::auth::{PASSWORD, member, sign_in};
use crate::browser::Browser;

/// A reverse proxy on loopback in front of `upstream`, as nginx's `proxy_add_x_forwarded_for`
/// does it: each request's `X-Forwarded-For` gets the connection's peer appended (or is added
/// with it), then the bytes go both ways unchanged. One request per connection, as the tests'
/// browser sends them. Its address.
async fn reverse_proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, peer)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buffer = [0u8; 4096];
                let end = loop {
                    let read = client.read(&mut buffer).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    received.extend_from_slice(&buffer[..read]);
                    if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end;
                    }
                };
                let head = String::from_utf8_lossy(&received[..end]).into_owned();
                let rest = &received[end + 4..];
                let mut forwarded = false;
                let mut lines: Vec<String> = head
                    .split("\r\n")
                    .map(|line| match line.split_once(':') {
                        Some((name, value)) if name.eq_ignore_ascii_case("x-forwarded-for") => {
                            forwarded = true;
                            format!("{name}: {}, {}", value.trim(), peer.ip())
                        }
                        _ => line.to_owned(),
                    })
                    .collect();
                if !forwarded {
                    lines.push(format!("X-Forwarded-For: {}", peer.ip()));
                }
                let mut server = TcpStream::connect(&upstream).await.unwrap();
                server
                    .write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())
                    .await
                    .unwrap();
                server.write_all(rest).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

/// A browser whose connections come from `local` (a loopback address of its own).
fn client_at(proxy: &str, local: &str) -> Browser {
    let mut browser = Browser::new(proxy);
    browser.local_ip = Some(local.parse::<IpAddr>().unwrap());
    browser
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_attackers_failed_sign_ins_never_throttle_anyone_else() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    member(&database, tenant, "ada@acme.example", Role::Owner).await;
    let mut state = crate::state(
        database.clone(),
        None,
        web::outbound::OutboundPolicy::development(),
    );
    // The proxy reaches the server from 127.0.0.1; the people behind it are 127.0.0.2 and .3.
    state.trusted_proxies = web::client_addr::TrustedProxies::parse(&["127.0.0.1"]).unwrap();
    let (server, _stop) = crate::serve_state(state).await;
    let proxy = reverse_proxy(server).await;

    // The attacker sprays passwords over many accounts through the proxy, claiming in its own
    // X-Forwarded-For to be the real user's address: the proxy appends the attacker's, and only
    // that counts. Past the per-address limit every attempt is refused.
    let mut attacker = client_at(&proxy, "127.0.0.2");
    attacker
        .extra_headers
        .push(("X-Forwarded-For".into(), "127.0.0.3".into()));
    let mut checked = 0;
    let throttled = loop {
        let page = sign_in(
            &mut attacker,
            &format!("victim{checked}@acme.example"),
            "a guessed password",
        )
        .await;
        match page.status {
            401 => checked += 1,
            429 => break page,
            other => panic!("unexpected {other}: {}", page.body),
        }
        assert!(checked <= 200, "the attacker is never throttled");
    };
    assert!(throttled.body.contains("Too many attempts"));
    assert_eq!(
        checked,
        web::auth::throttle::ADDRESS_LIMIT,
        "the attacker's own address was throttled at its limit"
    );
    assert_eq!(
        sign_in(&mut attacker, "ada@acme.example", PASSWORD)
            .await
            .status,
        429,
        "the attacker stays throttled, whatever it sends"
    );

    // Ada, behind the same proxy, signs in at once, and her session records her own address.
    let mut ada = client_at(&proxy, "127.0.0.3");
    let page = sign_in(&mut ada, "ada@acme.example", PASSWORD).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let account = ada.get("/app/settings/account").await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains("127.0.0.3"), "{}", account.body);
    assert!(!account.body.contains("127.0.0.2"));
}
