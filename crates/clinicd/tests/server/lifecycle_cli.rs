//! `clinicd lifecycle`: the retention dry run lists exactly the patients past every retention
//! period (the minors' rule and a hold shown), without PHI, and changes nothing; the holds
//! listing; the ledger check.

use std::sync::Arc;

use clinicd_crypto::{Keyring, LocalKeyProvider, SecretKey};
use clinicd_domain::PatientStore;
use clinicd_domain::types::{DateOfBirth, PatientStatus, PersonName, Sex};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::run_clinicd;

/// A patient registered `years` ago (backdated), with this date of birth.
async fn patient(store: &PatientStore, pool: &PgPool, family: &str, dob: &str, years: i32) -> Uuid {
    let today = chrono::Utc::now().date_naive();
    let data = clinicd_domain::PatientData {
        family_name: PersonName::parse("family_name", family).unwrap(),
        given_name: PersonName::parse("given_name", "Pat").unwrap(),
        date_of_birth: DateOfBirth::parse("date_of_birth", dob, today).unwrap(),
        sex: Sex::Unknown,
        ssn: None,
        address: None,
        phone: None,
        email: None,
        insurance_primary: None,
        insurance_secondary: None,
        emergency_contact: None,
        status: PatientStatus::Active,
    };
    let prepared = store.prepare(&data).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let created = store.create(&mut tx, &prepared, None).await.unwrap();
    tx.commit().await.unwrap();
    sqlx::query(
        "UPDATE patients SET created_at = now() - make_interval(years => $2) WHERE id = $1",
    )
    .bind(created.id)
    .bind(years)
    .execute(pool)
    .await
    .unwrap();
    created.id
}

fn lines(output: &std::process::Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_retention_report_lists_what_would_go_and_why_without_phi(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let provider = LocalKeyProvider::new(SecretKey::from_bytes(&[0x5a; 32]).unwrap());
    let keyring = Arc::new(Keyring::new(
        pool.clone(),
        Arc::new(provider),
        Default::default(),
    ));
    keyring.bootstrap().await.unwrap();
    let store = PatientStore::new(pool.clone(), keyring);
    let adult = patient(&store, &pool, "Oldfield", "1950-03-04", 10).await;
    let held = patient(&store, &pool, "Heldman", "1951-03-04", 10).await;
    // A minor when last seen eight years ago: kept until 21 plus seven years.
    let minor = patient(&store, &pool, "Young", "2012-05-06", 8).await;
    let recent = patient(&store, &pool, "Newman", "1960-01-01", 1).await;
    let placer =
        clinicd_test_support::create_user(&pool, "records.manager", "a long passphrase", false)
            .await
            .0;
    let mut tx = pool.begin().await.unwrap();
    let hold = clinicd_lifecycle::holds::place(
        &mut tx,
        clinicd_lifecycle::NewHold {
            scope: clinicd_lifecycle::HoldScope::Patients,
            patients: vec![held],
            reason: "litigation".into(),
            case_reference: "CV-9".into(),
        },
        placer,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let output = run_clinicd(&pool, dir.path(), &["lifecycle", "report"], &[]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = lines(&output);
    let (summary, due) = report.split_last().unwrap();
    let ids: Vec<&str> = due
        .iter()
        .map(|d| d["patient_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&adult.to_string().as_str()));
    assert!(ids.contains(&held.to_string().as_str()));
    assert!(!ids.contains(&minor.to_string().as_str()));
    assert!(!ids.contains(&recent.to_string().as_str()));
    assert_eq!(summary["due"], 2);
    assert_eq!(summary["held"], 1);
    let held_line = due
        .iter()
        .find(|d| d["patient_id"] == held.to_string())
        .unwrap();
    assert_eq!(held_line["hold_id"], hold.id.to_string());
    assert!(
        due.iter()
            .all(|d| d["rule"] == "record" && d["overdue_days"].as_i64().unwrap() > 300)
    );
    for name in ["Oldfield", "Heldman", "Pat", "1950", "1951"] {
        assert!(!text.contains(name), "the report shows {name}");
    }
    // A dry run: nothing filed, nothing erased; the run itself is in the trail.
    let (requests, erased, audited): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM erasure_requests), \
                (SELECT count(*) FROM patients WHERE erased_at IS NOT NULL), \
                (SELECT count(*) FROM audit_events WHERE resource_type = 'retention_report')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((requests, erased, audited), (0, 0, 1));

    let holds = lines(&run_clinicd(
        &pool,
        dir.path(),
        &["lifecycle", "holds"],
        &[],
    ));
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0]["case_reference"], "CV-9");
    let ledger = lines(&run_clinicd(
        &pool,
        dir.path(),
        &["lifecycle", "ledger"],
        &[],
    ));
    assert_eq!(ledger[0]["entries"], 0);
}
