//! A crypto-shredded patient fails cleanly: a read answers 410 problem+json, searches pass the
//! patient by, nothing indexes them any more, and another instance that had the key cached
//! drops it within seconds (Postgres LISTEN/NOTIFY).

use std::time::{Duration, Instant};

use clinicd_test_support::{TestApp, member, roomy_settings, send};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrations = "../../migrations")]
async fn a_shredded_patient_is_gone_on_every_instance(pool: PgPool) {
    // Two instances on one database, each with its own key cache.
    let here = TestApp::with_pool(roomy_settings(), pool.clone());
    let there = TestApp::with_pool(roomy_settings(), pool.clone());
    tokio::spawn(there.state.identity.keyring.clone().follow_destroyed_keys());

    let (_, desk) = member(&here, "front.desk", &["Staff"]).await;
    let patient = |given: &str| {
        json!({"given_name": given, "family_name": "Lovelace", "date_of_birth": "1985-12-10",
            "sex": "female", "ssn": "123-45-6789"})
    };
    let created = here
        .call(send("POST", "/api/patients", &desk, Some(patient("Ada"))))
        .await;
    assert_eq!(created.status, 201);
    let shredded = Uuid::parse_str(created.json()["id"].as_str().unwrap()).unwrap();
    let kept = here
        .call(send("POST", "/api/patients", &desk, Some(patient("Byron"))))
        .await;
    assert_eq!(kept.status, 201);
    // The other instance reads the patient: its cache now holds the key.
    let read = format!("/api/patients/{shredded}");
    assert_eq!(
        there.call(send("GET", &read, &desk, None)).await.status,
        200
    );

    let mut tx = pool.begin().await.unwrap();
    here.state.patients.shred(&mut tx, shredded).await.unwrap();
    tx.commit().await.unwrap();

    // Within seconds, the other instance answers 410 too.
    let started = Instant::now();
    loop {
        let response = there.call(send("GET", &read, &desk, None)).await;
        if response.status == 410 {
            let problem = response.assert_problem(410, "data_destroyed");
            assert!(!problem.to_string().contains("Lovelace"));
            break;
        }
        assert_eq!(response.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the other instance still serves a shredded record"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    here.call(send("GET", &read, &desk, None))
        .await
        .assert_problem(410, "data_destroyed");
    // Searches pass the patient by, and nothing finds the row by a known value.
    for criteria in [
        json!({}),
        json!({"name": "Lovelace"}),
        json!({"family_name": "Lovelace", "date_of_birth": "1985-12-10"}),
        json!({"ssn": "123-45-6789"}),
    ] {
        for app in [&here, &there] {
            let found = app
                .call(send(
                    "POST",
                    "/api/patients/search",
                    &desk,
                    Some(criteria.clone()),
                ))
                .await;
            assert_eq!(found.status, 200, "{criteria}");
            let ids: Vec<String> = found.json()["patients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect();
            assert!(!ids.contains(&shredded.to_string()), "{criteria}");
            assert_eq!(ids.len(), 1, "the other patient is still found: {criteria}");
        }
    }
    let (tokens, indexes): (i64, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM patient_name_tokens WHERE patient_id = $1), \
                (SELECT ssn_bidx IS NOT NULL OR date_of_birth_bidx IS NOT NULL OR family_name_bidx IS NOT NULL \
                 FROM patients WHERE id = $1)",
    )
    .bind(shredded)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((tokens, indexes), (0, false));
}
