//! Every command that changes accounts or the trail's storage is audited, with the command
//! named: `admin create`, `admin unlock`, `admin approve` (the operator as a single-
//! administrator clinic's second person), `files purge` and `audit maintain`.

use serde_json::Value;
use sqlx::PgPool;

use crate::support::run_clinicd;

/// The CLI events written so far: (action, resource, command).
async fn cli_events(pool: &PgPool) -> Vec<(String, Option<String>, Value)> {
    sqlx::query_as(
        "SELECT action, resource_type, metadata FROM audit_events WHERE reason = 'cli' ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[sqlx::test(migrations = "../../migrations")]
async fn account_commands_are_audited_with_the_command_named(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| run_clinicd(&pool, dir.path(), args, &[]);
    ok(&cli(&["admin", "create", "--username", "chief.admin"]));

    // A lockout the sole administrator cannot clear from the API.
    sqlx::query(
        "INSERT INTO login_attempts (username_key, user_id, failed_attempts, first_failed_at, last_failed_at, locked_until) \
         SELECT '\\x00'::bytea, id, 5, now(), now(), now() + interval '15 minutes' FROM users WHERE username = 'chief.admin'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(ok(&cli(&["admin", "unlock", "--username", "chief.admin"])).contains("Unlocked"));
    let locked: i64 = sqlx::query_scalar("SELECT count(*) FROM login_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(locked, 0);
    let unknown = cli(&["admin", "unlock", "--username", "nobody.here"]);
    assert!(!unknown.status.success());

    // A proposal waiting for a second administrator, approved by the operator.
    let (admin, target): (uuid::Uuid, uuid::Uuid) = {
        let admin = sqlx::query_scalar("SELECT id FROM users WHERE username = 'chief.admin'")
            .fetch_one(&pool)
            .await
            .unwrap();
        let target =
            clinicd_test_support::create_user(&pool, "dr.grey", "a long enough passphrase", false)
                .await;
        (admin, target.0)
    };
    let proposal: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO access_proposals (id, kind, target, payload, proposed_by, proposed_at, expires_at) \
         VALUES (gen_random_uuid(), 'user_roles', $1, '{\"roles\": [\"Provider\"]}', $2, now(), now() + interval '1 day') \
         RETURNING id",
    )
    .bind(target.to_string())
    .bind(admin)
    .fetch_one(&pool)
    .await
    .unwrap();
    let approved = ok(&cli(&["admin", "approve", &proposal.to_string()]));
    assert!(approved.contains("Approved user_roles"), "{approved}");
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT role_name FROM user_roles WHERE user_id = $1")
            .bind(target)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(roles, ["Provider"]);
    let again = cli(&["admin", "approve", &proposal.to_string()]);
    assert!(!again.status.success(), "a proposal is decided once");

    ok(&cli(&["files", "purge"]));
    ok(&cli(&["audit", "maintain"]));

    let events = cli_events(&pool).await;
    let commands: Vec<(&str, &str)> = events
        .iter()
        .map(|(action, _, metadata)| (action.as_str(), metadata["command"].as_str().unwrap()))
        .collect();
    assert_eq!(
        commands,
        [
            ("user_change", "admin create"),
            ("user_change", "admin unlock"),
            ("approve", "admin approve"),
            ("config_change", "audit maintain"),
        ],
        "{events:?}"
    );
    let verified: Value = serde_json::from_str(ok(&cli(&["audit", "verify"])).trim()).unwrap();
    assert_eq!(verified["first_broken_seq"], Value::Null, "{verified}");
}
