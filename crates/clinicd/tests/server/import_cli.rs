use std::io::Write;

use sqlx::PgPool;

use crate::support::run_clinicd;

const HEADER: &str = "source_id,given_name,family_name,date_of_birth,sex,ssn,phone,email,address_line1,address_line2,address_city,address_region,address_postal_code,address_country,insurance_primary_payer,insurance_primary_member_number,insurance_secondary_payer,insurance_secondary_member_number,emergency_contact_name,emergency_contact_relationship,emergency_contact_phone,status";

fn csv(rows: &[&str]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{HEADER}").unwrap();
    for row in rows {
        writeln!(file, "{row}").unwrap();
    }
    file
}

fn import(
    pool: &PgPool,
    dir: &std::path::Path,
    file: &std::path::Path,
    dry_run: bool,
) -> (String, serde_json::Value) {
    let path = file.to_str().unwrap();
    let mut args = vec!["import", "patients", path];
    if dry_run {
        args.push("--dry-run");
    }
    let output = run_clinicd(pool, dir, &args, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("rows").is_some())
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    (stdout, summary)
}

const GOOD: &str = "old-1,Ada,Lovelace,1915-12-10,female,123-45-6789,+15551234567,ada@example.org,1 Main St,,Springfield,IL,62701,US,Acme,XKQ123456789,,,Byron,father,+15557654321,active";
const GOOD_TOO: &str = "old-2,Alan,Turing,1912-06-23,male,,,,,,,,,,,,,,,,,";
const BAD_SSN: &str = "old-3,Grace,Hopper,1906-12-09,female,666-12-3456,,,,,,,,,,,,,,,,";
const SHORT: &str = "old-4,Katherine,Johnson";

#[sqlx::test(migrations = "../../migrations")]
async fn patients_import_once_with_a_report_per_row(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let file = csv(&[GOOD, GOOD_TOO, BAD_SSN, SHORT]);

    let (report, summary) = import(&pool, dir.path(), file.path(), true);
    assert_eq!(summary["dry_run"], true);
    assert_eq!(
        (summary["imported"].as_u64(), summary["invalid"].as_u64()),
        (Some(2), Some(2))
    );
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM patients")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 0, "a dry run writes nothing");
    assert!(
        report.contains("row 4: invalid: `ssn`: has an area number that is never issued"),
        "{report}"
    );
    assert!(report.contains("row 5: invalid:"), "{report}");
    assert!(
        !report.contains("666") && !report.contains("Hopper"),
        "no value in the report"
    );

    let (report, summary) = import(&pool, dir.path(), file.path(), false);
    assert_eq!(
        (summary["imported"].as_u64(), summary["invalid"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(report.contains("row 2: imported as MRN "), "{report}");
    assert_eq!(count().await, 2);

    // Re-running adds nothing; a corrected file adds only the fixed row.
    let (_, again) = import(&pool, dir.path(), file.path(), false);
    assert_eq!(
        (
            again["imported"].as_u64(),
            again["already_imported"].as_u64()
        ),
        (Some(0), Some(2))
    );
    let fixed = csv(&[
        GOOD,
        GOOD_TOO,
        &BAD_SSN.replace("666-12-3456", "123-45-6780"),
    ]);
    let (_, fixed) = import(&pool, dir.path(), fixed.path(), false);
    assert_eq!(
        (
            fixed["imported"].as_u64(),
            fixed["already_imported"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(count().await, 3);

    // Imported records are encrypted and findable like any other.
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(p)::text, ' ') FROM patients p")
            .fetch_one(&pool)
            .await
            .unwrap();
    for value in ["Lovelace", "123-45-6789", "old-1", "ada@example.org"] {
        assert!(!dump.contains(value), "{value} in clear");
    }

    // Each patient created is an audit event of its own, written by the command into the chain
    // (none for a dry run, a skipped or an invalid row), naming no value.
    let events: Vec<(Option<uuid::Uuid>, Option<String>, String)> = sqlx::query_as(
        "SELECT patient_id, resource_id, metadata::text FROM audit_events \
         WHERE action = 'create' AND resource_type = 'patient' AND reason = 'cli' \
         ORDER BY patient_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM patients ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(events.iter().map(|e| e.0.unwrap()).collect::<Vec<_>>(), ids);
    for (patient, resource, metadata) in &events {
        assert_eq!(
            resource.as_deref(),
            Some(patient.unwrap().to_string().as_str())
        );
        assert!(
            metadata.contains(r#""command": "import patients""#),
            "{metadata}"
        );
        assert!(!metadata.contains("Lovelace") && !metadata.contains("old-"));
    }
    let verify = run_clinicd(&pool, dir.path(), &["audit", "verify"], &[]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
