//! `clinicd files import` and `clinicd files purge` through the binary: a folder of plaintext
//! documents encrypted into the local store and, with KMS as the root and S3 as the store,
//! into a moto bucket; re-runs skip what is stored; originals are deleted only after a
//! verified read-back.

use std::path::Path;

use sqlx::PgPool;

use crate::support::run_clinicd;

/// Two patients imported through the CLI; their MRNs.
async fn patients(pool: &PgPool, dir: &Path, env: &[(&str, String)]) -> Vec<String> {
    let file = dir.join("patients.csv");
    std::fs::write(
        &file,
        "source_id,given_name,family_name,date_of_birth,sex\n\
         a,Ada,Lovelace,1915-12-10,female\n\
         b,Alan,Turing,1912-06-23,male\n",
    )
    .unwrap();
    let output = run_clinicd(
        pool,
        dir,
        &["import", "patients", file.to_str().unwrap()],
        env,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    sqlx::query_scalar("SELECT mrn FROM patients ORDER BY mrn")
        .fetch_all(pool)
        .await
        .unwrap()
}

struct Folder {
    pdf: Vec<u8>,
    png: Vec<u8>,
    text: Vec<u8>,
}

/// A folder of documents and its map: three good lines, then an unknown MRN, an escape from
/// the folder, an unsupported type and an unknown category.
fn folder(docs: &Path, mrns: &[String]) -> Folder {
    std::fs::create_dir_all(docs.join("scans")).unwrap();
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..70_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8));
    let text = b"Referral: knee pain, please assess. Signed Dr Grey.\n".repeat(50);
    std::fs::write(docs.join("scans/lab result.pdf"), &pdf).unwrap();
    std::fs::write(docs.join("card.png"), &png).unwrap();
    std::fs::write(docs.join("referral.txt"), &text).unwrap();
    std::fs::write(docs.join("setup.exe"), b"MZ\x90\x00\x03\x00\x00\x00").unwrap();
    let map = format!(
        "path,mrn,category\n\
         scans/lab result.pdf,{a},lab_result\n\
         card.png,{a},insurance_card_front\n\
         referral.txt,{b},referral\n\
         card.png,000000000,other\n\
         ../outside.pdf,{a},other\n\
         setup.exe,{b},other\n\
         referral.txt,{b},holiday_photo\n",
        a = mrns[0],
        b = mrns[1]
    );
    std::fs::write(docs.join("map.csv"), map).unwrap();
    Folder { pdf, png, text }
}

fn files_import(
    pool: &PgPool,
    dir: &Path,
    docs: &Path,
    extra_args: &[&str],
    env: &[(&str, String)],
) -> (bool, String, serde_json::Value) {
    let map = docs.join("map.csv");
    let mut args = vec![
        "files",
        "import",
        docs.to_str().unwrap(),
        "--map",
        map.to_str().unwrap(),
    ];
    args.extend_from_slice(extra_args);
    let output = run_clinicd(pool, dir, &args, env);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("lines").is_some())
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    (output.status.success(), stdout, summary)
}

fn counts(summary: &serde_json::Value) -> [u64; 4] {
    [
        "imported",
        "already_imported",
        "failed",
        "originals_deleted",
    ]
    .map(|k| summary[k].as_u64().unwrap())
}

async fn object_keys(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT object_key FROM files ORDER BY created_at")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_folder_is_imported_once_and_originals_go_only_after_read_back(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mrns = patients(&pool, dir.path(), &[]).await;
    let docs = dir.path().join("docs");
    let folder = folder(&docs, &mrns);

    let (ok, report, summary) = files_import(&pool, dir.path(), &docs, &[], &[]);
    assert!(!ok, "failed lines make the command fail");
    assert_eq!(counts(&summary), [3, 0, 4, 0], "{report}");
    assert!(
        report.contains("line 5: failed: no patient has this MRN"),
        "{report}"
    );
    assert!(
        report.contains("line 6: failed: the path must be relative to DIR"),
        "{report}"
    );
    assert!(
        report.contains("line 7: failed: the file's content is not an allowed type"),
        "{report}"
    );
    assert!(
        report.contains("line 8: failed: unknown category"),
        "{report}"
    );
    assert!(
        !report.contains("lab result") && !report.contains(&mrns[0]),
        "no path or patient in the report"
    );

    // Stored encrypted under the data directory's store, named, typed and attributed to no user.
    let rows: Vec<(String, i64, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT content_type, size_bytes, uploaded_by FROM files ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("application/pdf".into(), folder.pdf.len() as i64, None),
            ("image/png".into(), folder.png.len() as i64, None),
            ("text/plain".into(), folder.text.len() as i64, None),
        ]
    );
    for key in object_keys(&pool).await {
        let object = std::fs::read(dir.path().join("files/objects").join(&key)).unwrap();
        assert!(object.starts_with(b"CLNF"));
        assert!(
            !object
                .windows(8)
                .any(|w| w == b"Referral" || w == &folder.pdf[1000..1008])
        );
    }

    // A re-run stores nothing new.
    let (_, report, summary) = files_import(&pool, dir.path(), &docs, &[], &[]);
    assert_eq!(counts(&summary), [0, 3, 4, 0], "{report}");

    // Each stored file is an upload event of its patient, as through the API, written once by
    // the command (the re-run stored nothing, so it wrote nothing), naming no file name.
    let events: Vec<(Option<uuid::Uuid>, Option<String>, String)> = sqlx::query_as(
        "SELECT patient_id, resource_id, metadata::text FROM audit_events \
         WHERE action = 'upload' ORDER BY resource_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let stored: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT patient_id, id::text FROM files ORDER BY id::text")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        events
            .iter()
            .map(|(patient, id, _)| (patient.unwrap(), id.clone().unwrap()))
            .collect::<Vec<_>>(),
        stored
    );
    for (_, _, metadata) in &events {
        assert!(
            metadata.contains(r#""command": "files import""#),
            "{metadata}"
        );
        assert!(!metadata.contains("lab result") && !metadata.contains("card.png"));
    }
    assert_eq!(object_keys(&pool).await.len(), 3);

    // A stored object that no longer matches keeps its original.
    let keys = object_keys(&pool).await;
    let damaged = dir.path().join("files/objects").join(&keys[2]);
    let good = std::fs::read(&damaged).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&damaged, &bad).unwrap();
    let (_, report, summary) = files_import(&pool, dir.path(), &docs, &["--delete-originals"], &[]);
    assert_eq!(counts(&summary), [0, 2, 5, 2], "{report}");
    assert!(
        report.contains("line 4: failed: read-back failed, original kept"),
        "{report}"
    );
    assert!(!docs.join("scans/lab result.pdf").exists() && !docs.join("card.png").exists());
    assert!(docs.join("referral.txt").exists());

    // Repaired, a re-run finishes the job.
    std::fs::write(&damaged, &good).unwrap();
    std::fs::write(
        docs.join("map.csv"),
        format!("path,mrn,category\nreferral.txt,{},referral\n", mrns[1]),
    )
    .unwrap();
    let (ok, report, summary) =
        files_import(&pool, dir.path(), &docs, &["--delete-originals"], &[]);
    assert!(ok, "{report}");
    assert_eq!(counts(&summary), [0, 1, 0, 1], "{report}");
    assert!(!docs.join("referral.txt").exists());

    // Nothing is due for purge yet.
    let output = run_clinicd(&pool, dir.path(), &["files", "purge"], &[]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        r#"{"kept_by_legal_hold":0,"purged":0}"#
    );
}

/// As a clinic on AWS would run it: KMS as the root key, S3 (moto) as the store.
#[sqlx::test(migrations = "../../migrations")]
async fn a_folder_is_imported_into_s3_under_kms(pool: PgPool) {
    let (_, key_id) = clinicd_test_support::moto_kms_key().await;
    let (s3, bucket) = clinicd_test_support::moto_s3_bucket().await;
    let env = vec![
        ("CLINICD_KEY_PROVIDER", "aws-kms".to_owned()),
        ("CLINICD_KMS_KEY_ID", key_id),
        ("CLINICD_STORAGE", "s3".to_owned()),
        ("CLINICD_S3_BUCKET", bucket.clone()),
        ("CLINICD_S3_PREFIX", "clinic-a/".to_owned()),
        (
            "AWS_ENDPOINT_URL",
            std::env::var("AWS_ENDPOINT_URL").unwrap(),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mrns = patients(&pool, dir.path(), &env).await;
    let docs = dir.path().join("docs");
    let folder = folder(&docs, &mrns);

    let (_, report, summary) =
        files_import(&pool, dir.path(), &docs, &["--delete-originals"], &env);
    assert_eq!(counts(&summary), [3, 0, 4, 3], "{report}");
    for (key, plain) in
        object_keys(&pool)
            .await
            .iter()
            .zip([&folder.pdf, &folder.png, &folder.text])
    {
        let object =
            clinicd_test_support::s3_object(&s3, &bucket, &format!("clinic-a/{key}")).await;
        assert!(object.starts_with(b"CLNF"), "our format in the bucket");
        assert!(object.len() > plain.len());
        assert!(
            !object.windows(16).any(|w| w == &plain[100..116]),
            "no plaintext in the bucket"
        );
    }
    assert!(
        !docs.join("card.png").exists(),
        "originals deleted after read-back from S3"
    );
}

/// Import keys are keyed hashes under the blind-index key; after that key is rotated, a re-run
/// of either import must still recognise what was imported rather than store it twice.
#[sqlx::test(migrations = "../../migrations")]
async fn re_imports_after_a_blind_index_rotation_store_nothing_twice(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mrns = patients(&pool, dir.path(), &[]).await;
    let docs = dir.path().join("docs");
    folder(&docs, &mrns);
    let (_, report, summary) = files_import(&pool, dir.path(), &docs, &[], &[]);
    assert_eq!(counts(&summary), [3, 0, 4, 0], "{report}");

    let rotated = run_clinicd(
        &pool,
        dir.path(),
        &["keys", "rotate-branch", "--purpose", "blind_index"],
        &[],
    );
    assert!(rotated.status.success());

    let again = patients(&pool, dir.path(), &[]).await;
    assert_eq!(again, mrns, "no patient imported twice");
    let (_, report, summary) = files_import(&pool, dir.path(), &docs, &[], &[]);
    assert_eq!(counts(&summary), [0, 3, 4, 0], "{report}");
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(files, 3);
}
