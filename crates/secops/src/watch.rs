//! Patients the privacy office watches (VIPs, employees and their families): the
//! `watched_patient` rule alerts on every access to one.

use chrono::Utc;
use sqlx::PgConnection;
use uuid::Uuid;

/// Watches a patient (or changes why); false if there is no such patient.
pub async fn watch(
    conn: &mut PgConnection,
    patient: Uuid,
    label: &str,
    reason: &str,
    by: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO watched_patients (patient_id, label, reason, added_by, added_at) \
         SELECT id, $2, $3, $4, $5 FROM patients WHERE id = $1 \
         ON CONFLICT (patient_id) DO UPDATE SET label = EXCLUDED.label, reason = EXCLUDED.reason, \
                added_by = EXCLUDED.added_by, added_at = EXCLUDED.added_at",
        patient,
        label,
        reason,
        by,
        Utc::now()
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stops watching; false if the patient was not watched.
pub async fn unwatch(conn: &mut PgConnection, patient: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM watched_patients WHERE patient_id = $1",
        patient
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
