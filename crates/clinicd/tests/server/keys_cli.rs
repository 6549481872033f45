use std::process::Command;

use sqlx::PgPool;

use crate::support::dev_vars;

/// Runs `clinicd keys ...` against the test's own database.
fn clinicd_keys(pool: &PgPool, dir: &std::path::Path, args: &[&str]) -> String {
    let base = std::env::var("DATABASE_URL").unwrap();
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let mut vars = dev_vars(dir);
    vars.insert("DATABASE_URL".into(), url);
    vars.insert("CLINICD_MIGRATE_ON_START".into(), "false".into());
    vars.insert("CLINICD_LOG".into(), "warn".into());
    let output = Command::new(env!("CARGO_BIN_EXE_clinicd"))
        .env_clear()
        .envs(vars)
        .current_dir(dir)
        .arg("keys")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "clinicd keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The rows of `keys status` as (purpose, version, status, kek_version, subject_keys).
fn rows(status: &str) -> Vec<(String, u32, String, u32, i64)> {
    status
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (
                cells[0].into(),
                cells[1].parse().unwrap(),
                cells[2].into(),
                cells[3].parse().unwrap(),
                cells[4].parse().unwrap(),
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../../migrations")]
async fn rotate_kek_then_status_shows_every_branch_key_under_the_new_kek(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let output = clinicd_keys(&pool, dir.path(), &["rotate-kek"]);
    assert!(
        output.contains("rewrapped 4 branch key(s) under KEK generation 2"),
        "{output}"
    );
    let status = rows(&clinicd_keys(&pool, dir.path(), &["status"]));
    assert_eq!(status.len(), 4, "{status:?}");
    assert!(
        status
            .iter()
            .all(|(_, _, state, kek, _)| state == "active" && *kek == 2),
        "{status:?}"
    );

    let output = clinicd_keys(&pool, dir.path(), &["rotate-branch", "--purpose", "field"]);
    assert!(output.contains("new field branch key v2"), "{output}");
    let status = rows(&clinicd_keys(&pool, dir.path(), &["status"]));
    let field: Vec<_> = status.iter().filter(|r| r.0 == "field").collect();
    assert_eq!(field.len(), 2);
    assert_eq!((field[0].1, field[0].2.as_str()), (1, "retired"));
    assert_eq!((field[1].1, field[1].2.as_str()), (2, "active"));
}
