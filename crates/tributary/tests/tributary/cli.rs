//! The operator CLI against a managed cluster: help, tenants, users, members, audit, lint.

use crate::support::{DataDir, stdout, tributary};

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
