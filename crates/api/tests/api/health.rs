use clinicd_test_support::{TestApp, settings};
use sqlx::PgPool;

#[sqlx::test(migrations = "../../migrations")]
async fn ready_when_postgres_answers(pool: PgPool) {
    let response = TestApp::with_pool(settings(), pool).get("/ready").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["status"], "ready");
}

#[actix_web::test]
async fn not_ready_when_postgres_is_unreachable() {
    let response = TestApp::new(settings()).get("/ready").await;
    let problem = response.assert_problem(503, "service_unavailable");
    // Says nothing about where the database is or why it failed.
    let text = problem.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("postgres"),
        "{text}"
    );
}

#[actix_web::test]
async fn alive_without_a_database() {
    let response = TestApp::new(settings()).get("/health").await;
    assert_eq!(response.status, 200);
}
