//! The accounting of disclosures (HIPAA §164.528) is complete: every answer that disclosed a
//! patient names them, searches and lists included; a release outside the clinic says to whom
//! and why; and the accounting pages past any size.

use clinicd_test_support::{TestApp, member, roomy_settings, send};
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test(migrations = "../../migrations")]
async fn every_disclosure_of_a_patient_is_in_their_accounting(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let created = app
        .call(send(
            "POST",
            "/api/patients",
            &desk,
            Some(json!({"given_name": "Ada", "family_name": "Byron", "date_of_birth": "1980-12-10", "sex": "female"})),
        ))
        .await;
    let patient = created.json()["id"].as_str().unwrap().to_owned();
    // A search that returned the patient among others, and a list by name.
    let found = app
        .call(send(
            "POST",
            "/api/patients/search",
            &desk,
            Some(json!({"name": "Byron"})),
        ))
        .await;
    assert_eq!(found.json()["patients"][0]["id"], patient.as_str());
    // A release outside the clinic, to a named recipient for a stated purpose.
    let export = app
        .call(send(
            "GET",
            &format!("/api/patients/{patient}/export?recipient=Dr%20Smith%2C%20Mercy%20Hospital&purpose=treatment"),
            &officer,
            None,
        ))
        .await;
    assert_eq!(export.status, 200);
    for bad in [
        format!("/api/patients/{patient}/export"),
        format!("/api/patients/{patient}/export?recipient=x&purpose=gossip"),
        format!("/api/patients/{patient}/export?recipient=&purpose=legal"),
        format!("/api/patients/{patient}/export?recipient=%E2%80%AEx&purpose=legal"),
    ] {
        app.call(send("GET", &bad, &officer, None))
            .await
            .assert_problem(400, "invalid_parameters");
    }

    let accounting = app
        .call(send(
            "GET",
            &format!("/api/audit/patients/{patient}/disclosures"),
            &officer,
            None,
        ))
        .await;
    assert_eq!(accounting.status, 200);
    let entries: Vec<Value> = accounting.json().as_array().unwrap().clone();
    let descriptions: Vec<&str> = entries
        .iter()
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        [
            "create patient",
            "search patient (listed among the results)",
            "export patient"
        ],
        "{entries:?}"
    );
    let search = &entries[1];
    assert_eq!(search["actor_username"], "front.desk");
    assert!(search["recipient"].is_null(), "inside the clinic");
    let release = &entries[2];
    assert_eq!(release["recipient"], "Dr Smith, Mercy Hospital");
    assert_eq!(release["purpose"], "treatment");
    assert_eq!(release["actor_username"], "privacy.officer");
    assert!(release["occurred_at"].is_string());
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_accounting_pages_past_any_size(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let created = app
        .call(send(
            "POST",
            "/api/patients",
            &desk,
            Some(json!({"given_name": "Ada", "family_name": "Byron", "date_of_birth": "1980-12-10", "sex": "female"})),
        ))
        .await;
    let patient = created.json()["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        app.call(send(
            "GET",
            &format!("/api/patients/{patient}"),
            &desk,
            None,
        ))
        .await;
    }
    let mut seen = Vec::new();
    let mut page = format!("/api/audit/patients/{patient}/disclosures?limit=2");
    loop {
        let response = app.call(send("GET", &page, &officer, None)).await;
        assert_eq!(response.status, 200);
        for entry in response.json().as_array().unwrap() {
            seen.push(entry["seq"].as_i64().unwrap());
        }
        let Some(link) = response.header("link") else {
            break;
        };
        let next = link
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap()
            .0;
        page = format!("/api/audit/patients/{patient}/disclosures{next}");
    }
    assert_eq!(seen.len(), 5, "the registration and four reads: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no repeats"
    );
    for bad in ["limit=0", "limit=1001", "after=x"] {
        app.call(send(
            "GET",
            &format!("/api/audit/patients/{patient}/disclosures?{bad}"),
            &officer,
            None,
        ))
        .await
        .assert_problem(400, "invalid_parameters");
    }
}
