use std::process::Output;

use secrecy::SecretString;
use sqlx::{PgPool, Row};

use crate::support::run_clinicd;

fn clinicd_admin(pool: &PgPool, dir: &std::path::Path, args: &[&str]) -> Output {
    run_clinicd(pool, dir, &[&["admin"], args].concat(), &[])
}

#[sqlx::test(migrations = "../../migrations")]
async fn admin_create_prints_a_one_time_password_once_and_forces_a_change(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let output = clinicd_admin(&pool, dir.path(), &["create", "--username", "Admin"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let password = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 24 && l.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| panic!("no password in: {stdout}"))
        .to_owned();

    let row =
        sqlx::query("SELECT username, status, must_change_password, password_hash FROM users")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(row.get::<String, _>("username"), "Admin");
    assert_eq!(row.get::<String, _>("status"), "active");
    assert!(row.get::<bool, _>("must_change_password"));
    let hash: String = row.get("password_hash");
    assert!(
        hash.starts_with("$argon2id$") && !hash.contains(&password),
        "stored hashed, never in clear"
    );
    let hasher =
        clinicd_identity::password::PasswordHasherPool::new(Default::default(), 1).unwrap();
    let verified = hasher
        .verify(&SecretString::from(password.clone()), Some(&hash))
        .await
        .unwrap();
    assert!(verified.matches);
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(&password),
        "the password is not logged"
    );

    // Usernames are unique whatever their case.
    let again = clinicd_admin(&pool, dir.path(), &["create", "--username", "ADMIN"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("username is taken"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let bad = clinicd_admin(
        &pool,
        dir.path(),
        &["create", "--username", "no spaces allowed"],
    );
    assert!(!bad.status.success());
}
