//! The operator CLI against a managed cluster: help, tenants, users, members, audit, lint, and
//! the pairing command `source create` prints.

use crate::support::{BINARY, DataDir, start_platform_with, stdout, tributary};

#[test]
fn help_explains_how_to_start() {
    let output = std::process::Command::new(crate::support::BINARY)
        .arg("--help")
        .output()
        .unwrap();
    let help = stdout(&output);
    assert!(output.status.success());
    for expected in [
        "tributary up",
        "TRIBUTARY_DATABASE_URL",
        "TRIBUTARY_DATA_DIR",
        "--config",
        "tenant",
        "member",
        "audit",
        "Exit status",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
    assert!(
        !help.contains("postgres://"),
        "no URL value (or secret) is echoed in help"
    );
}

#[test]
fn operators_manage_tenants_users_and_members_and_everything_is_audited() {
    let data_dir = DataDir::new();
    let migrated = tributary(&data_dir, &["migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(
        stdout(&migrated).contains(&format!(
            "{} migration(s) applied now",
            store::migrate::embedded_migrations().count()
        )),
        "{}",
        stdout(&migrated)
    );

    let created = tributary(
        &data_dir,
        &[
            "tenant",
            "create",
            "--name",
            "Acme",
            "--plan",
            "business",
            "--industry",
            "Energy",
            "--region",
            "EU",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let tenant = stdout(&created)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();

    let bad_plan = tributary(
        &data_dir,
        &[
            "tenant",
            "create",
            "--name",
            "X",
            "--plan",
            "gold",
            "--industry",
            "x",
            "--region",
            "y",
        ],
    );
    assert!(!bad_plan.status.success());
    assert!(String::from_utf8_lossy(&bad_plan.stderr).contains("plan: expected one of"));

    for (email, role) in [("ada@example.com", "owner"), ("bob@example.com", "viewer")] {
        let user = tributary(&data_dir, &["user", "create", "--email", email]);
        assert!(user.status.success(), "{user:?}");
        let member = tributary(
            &data_dir,
            &[
                "member", "add", "--tenant", &tenant, "--email", email, "--role", role,
            ],
        );
        assert!(member.status.success(), "{member:?}");
    }
    let listed = tributary(
        &data_dir,
        &["member", "list", "--tenant", &tenant, "--json"],
    );
    let members: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(members.as_array().unwrap().len(), 2);
    assert_eq!(members[0]["role"], "owner");

    let last_owner = tributary(
        &data_dir,
        &[
            "member",
            "remove",
            "--tenant",
            &tenant,
            "--email",
            "ada@example.com",
        ],
    );
    assert!(!last_owner.status.success());
    assert!(String::from_utf8_lossy(&last_owner.stderr).contains("at least one owner"));
    let removed = tributary(
        &data_dir,
        &[
            "member",
            "remove",
            "--tenant",
            &tenant,
            "--email",
            "bob@example.com",
        ],
    );
    assert!(removed.status.success(), "{removed:?}");

    let verified = tributary(&data_dir, &["audit", "verify"]);
    assert!(verified.status.success(), "{verified:?}");
    let report = stdout(&verified);
    assert!(
        report.contains(&format!("ok      {tenant}  4 entries, chain intact")),
        "{report}"
    );
    assert!(report.contains("2 chain(s) verified, 0 broken"), "{report}");

    let token = tributary(
        &data_dir,
        &[
            "token", "create", "--tenant", &tenant, "--name", "deploy", "--role", "admin",
        ],
    );
    assert!(token.status.success(), "{token:?}");
    assert!(stdout(&token).contains("tat1."), "{}", stdout(&token));

    let lint = tributary(&data_dir, &["db", "lint"]);
    assert!(lint.status.success(), "{}", stdout(&lint));
    assert!(stdout(&lint).contains("0 finding(s)"));

    let unknown = tributary(&data_dir, &["member", "list", "--tenant", "not-a-uuid"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("tenant id must be a UUID"));
}

#[test]
fn a_replay_range_out_of_bounds_is_refused_with_the_flag_at_fault() {
    use time::format_description::well_known::Rfc3339;
    let data_dir = DataDir::new();
    let now = time::OffsetDateTime::now_utc();
    let at = |offset: time::Duration| (now + offset).format(&Rfc3339).unwrap();
    let tenant = uuid::Uuid::new_v4().to_string();
    let hour = time::Duration::hours(1);
    for (from, to, flag, code) in [
        (at(-hour), at(-hour * 2), "--to", "range_inverted"),
        (at(-hour), at(-hour), "--to", "range_empty"),
        (at(hour), at(hour * 2), "--from", "range_in_future"),
        (at(-hour), at(hour), "--to", "range_ends_too_late"),
        (at(-hour * 24 * 8), at(-hour), "--from", "range_too_long"),
    ] {
        let refused = tributary(
            &data_dir,
            &["replay", "--tenant", &tenant, "--from", &from, "--to", &to],
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{code}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {flag}: ")) && stderr.contains(code),
            "{code}: {stderr}"
        );
    }
    // Refused before anything connects: no cluster was even created.
    assert!(!data_dir.pgdata().exists());

    // In bounds (a day that ends within the 5 minutes allowed), the replay is recorded and
    // runs; a second one after it is done is taken as well.
    assert!(tributary(&data_dir, &["migrate"]).status.success());
    let created = tributary(
        &data_dir,
        &[
            "tenant",
            "create",
            "--name",
            "Acme",
            "--plan",
            "team",
            "--industry",
            "x",
            "--region",
            "eu",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let tenant = stdout(&created)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        let replayed = tributary(
            &data_dir,
            &[
                "replay",
                "--tenant",
                &tenant,
                "--from",
                &at(-hour * 24),
                "--to",
                &at(time::Duration::minutes(4)),
            ],
        );
        assert!(replayed.status.success(), "{replayed:?}");
        assert!(stdout(&replayed).contains("replay done: 0 event(s) replayed"));
    }
}

/// `source create` prints the edge agents can reach: the configured public address (flag,
/// environment or file), else where the running platform's edge listens, its real port included
/// (`up` here listens on a port the system chose, never the default one).
#[test]
fn source_create_prints_the_configured_edge_address() {
    let data_dir = DataDir::new();
    let (platform, printed) = start_platform_with(&data_dir, &["--no-demo"]);
    let listening = printed.trim_end_matches('/').to_owned();
    assert!(
        listening.starts_with("https://127.0.0.1:") && !listening.ends_with(":8443"),
        "{listening}"
    );
    let created = tributary(
        &data_dir,
        &[
            "tenant",
            "create",
            "--name",
            "Acme",
            "--plan",
            "team",
            "--industry",
            "x",
            "--region",
            "y",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let tenant = stdout(&created)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    let config = data_dir.0.join("tributary.toml");
    std::fs::write(
        &config,
        "edge_public_url = \"https://from-the-file.example.com\"\n",
    )
    .unwrap();
    let create = |name: &str, flags: &[&str], env: &[(&str, &str)]| {
        let output = std::process::Command::new(BINARY)
            .arg("--data-dir")
            .arg(&data_dir.0)
            .args(flags)
            .args(["source", "create", "--tenant", &tenant, "--name", name])
            .args(["--kind", "postgres"])
            .env_remove("TRIBUTARY_DATABASE_URL")
            .env_remove("TRIBUTARY_EDGE_PUBLIC_URL")
            .env_remove("TRIBUTARY_EDGE_ADDR")
            .env_remove("TRIBUTARY_CONFIG")
            .envs(env.iter().copied())
            .output()
            .expect("run tributary");
        (output.status.success(), stdout(&output), output)
    };
    let pairs_with = |text: &str, edge: &str| {
        text.contains(&format!("tributary-agent pair --edge {edge} --token tpt1."))
    };

    let (ok, text, output) = create("by-default", &[], &[]);
    assert!(ok, "{output:?}");
    assert!(pairs_with(&text, &listening), "{text}");
    let (ok, text, output) = create(
        "by-flag",
        &["--edge-public-url", "https://ingest.example.com:9443/"],
        &[],
    );
    assert!(ok, "{output:?}");
    assert!(
        pairs_with(&text, "https://ingest.example.com:9443"),
        "{text}"
    );
    let (ok, text, output) = create(
        "by-environment",
        &[],
        &[(
            "TRIBUTARY_EDGE_PUBLIC_URL",
            "https://from-the-env.example.com",
        )],
    );
    assert!(ok, "{output:?}");
    assert!(
        pairs_with(&text, "https://from-the-env.example.com"),
        "{text}"
    );
    let config_flag = ["--config", config.to_str().unwrap()];
    let (ok, text, output) = create("by-file", &config_flag, &[]);
    assert!(ok, "{output:?}");
    assert!(
        pairs_with(&text, "https://from-the-file.example.com"),
        "{text}"
    );
    let (ok, text, output) = create(
        "flag-over-file",
        &[
            &config_flag[..],
            &["--edge-public-url", "https://flag.example.com"],
        ]
        .concat(),
        &[],
    );
    assert!(ok, "{output:?}");
    assert!(pairs_with(&text, "https://flag.example.com"), "{text}");

    let (ok, _, output) = create(
        "plain-http",
        &["--edge-public-url", "http://ingest.example.com"],
        &[],
    );
    assert!(!ok, "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("TRIBUTARY_EDGE_PUBLIC_URL"),
        "{output:?}"
    );
    let (status, _) = platform.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
}
