//! Files through the real server over HTTPS, as a client sees them: a streamed multipart upload
//! and a byte-identical download with its headers; a stored object damaged early is a 502
//! problem, damaged late a connection closed short of `Content-Length` (no unverified byte
//! arrives either way).

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{client, staff_token, start};

const BOUNDARY: &str = "clinicd-https-test";

fn png(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x: u32 = 0x1234_5678;
    bytes.extend((8..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x >> 11) as u8
    }));
    bytes
}

#[sqlx::test(migrations = "../../migrations")]
async fn documents_stream_over_https_and_damage_never_reaches_the_client(pool: PgPool) {
    let running = start(pool.clone(), &[]).await;
    let base = format!("https://localhost:{}", running.app_ports.0);
    let http = client(&running.cert_pem);
    let token = staff_token(&pool, &http, &base).await;
    let patient: Value = http
        .post(format!("{base}/api/patients"))
        .bearer_auth(&token)
        .json(&json!({"given_name": "Pat", "family_name": "Smith", "date_of_birth": "1970-05-06", "sex": "unknown"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let patient = patient["id"].as_str().unwrap();

    // 2 MiB: four of the server's decryption batches.
    let document = png(2 * 1024 * 1024 + 7);
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\nreferral\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"Referral letter.png\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&document);
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let uploaded = http
        .post(format!("{base}/api/patients/{patient}/files"))
        .bearer_auth(&token)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let id = uploaded.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let url = format!("{base}/api/files/{id}");
    let downloaded = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(downloaded.status(), 200);
    let headers = downloaded.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"Referral_letter.png\""
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-length"],
        document.len().to_string().as_str()
    );
    assert_eq!(downloaded.bytes().await.unwrap().as_ref(), &document[..]);

    let object = running.dir.path().join("files/objects/files").join(&id);
    let original = std::fs::read(&object).unwrap();

    // Late damage (in the last segment): the status and headers have gone; the connection is
    // closed before Content-Length bytes, and the client's read fails.
    let mut late = original.clone();
    let at = late.len() - 100;
    late[at] ^= 1;
    std::fs::write(&object, &late).unwrap();
    let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let read = response.bytes().await;
    assert!(read.is_err(), "a damaged object was served whole");

    // Early damage (in the header): a clean problem before anything is sent.
    let mut early = original.clone();
    early[20] ^= 1;
    std::fs::write(&object, &early).unwrap();
    let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "file_integrity_failed"
    );

    let raised: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM security_events WHERE kind = 'file_integrity_failure'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(raised, 2);

    // Repaired, it opens again: nothing about the file was changed by the failures.
    std::fs::write(&object, &original).unwrap();
    let again = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(again.bytes().await.unwrap().as_ref(), &document[..]);
}
