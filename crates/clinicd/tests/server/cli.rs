use std::process::Command;

use crate::support::{dev_vars, production_vars};

fn clinicd(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clinicd"));
    // A clean environment, and a working directory without a .env file.
    command.env_clear().current_dir(dir).arg("--check-config");
    command
}

#[test]
fn starting_without_signing_key_material_exits_non_zero_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = production_vars(dir.path());
    vars.remove("CLINICD_TOKEN_SIGNING_KEY");
    let output = clinicd(dir.path()).envs(&vars).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("CLINICD_TOKEN_SIGNING_KEY: is required but not set"),
        "{stderr}"
    );
}

#[test]
fn an_empty_environment_lists_every_missing_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = clinicd(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    for variable in [
        "CLINICD_TLS_CERT_FILE",
        "DATABASE_URL",
        "CLINICD_TOKEN_SIGNING_KEY",
        // Production names its key provider rather than defaulting to a local key file.
        "CLINICD_KEY_PROVIDER",
    ] {
        assert!(
            stderr.contains(variable),
            "{variable} not named in: {stderr}"
        );
    }
}

#[test]
fn check_config_accepts_a_valid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let output = clinicd(dir.path())
        .envs(dev_vars(dir.path()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("configuration is valid"));
}

#[test]
fn a_dotenv_file_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = dev_vars(dir.path());
    let key = vars.remove("CLINICD_TOKEN_SIGNING_KEY").unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("CLINICD_TOKEN_SIGNING_KEY={key}\nCLINICD_LISTEN_ADDR=nonsense\n"),
    )
    .unwrap();
    vars.insert("CLINICD_LISTEN_ADDR".into(), "127.0.0.1:9443".into());
    let output = clinicd(dir.path()).envs(&vars).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
