//! Documents over HTTP against the local store: byte-identical round trips at the sizes that
//! matter to the segment format, ciphertext only at rest, tampering refused and audited, the
//! size limit and type sniffing, malformed and cut uploads leaving nothing, soft delete, key
//! rotation without touching objects, and the role and care-team matrix by file id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::test::{self, TestRequest};
use clinicd_files::store::{ObjectReader, ObjectWriter};
use clinicd_files::{FileSettings, Files, LocalStore, ObjectStore, ObjectStoreError};
use clinicd_test_support::{TestApp, bearer, member, probe_routes, roomy_settings, send};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

const BOUNDARY: &str = "clinicd-test-7MA4YWxkTrZu0gW";
const SEGMENT: usize = 64 * 1024;

/// An app whose files go to `dir` (so tests can look at and damage the stored objects).
fn app(pool: &PgPool, dir: &Path, files: FileSettings) -> TestApp {
    let mut settings = roomy_settings();
    settings.rate_limits.upload = settings.rate_limits.api;
    let mut app = TestApp::with_pool(settings, pool.clone());
    app.state.files = Files::new(
        pool.clone(),
        app.state.identity.keyring.clone(),
        Arc::new(LocalStore::new(dir)),
        files,
    );
    app
}

/// Deterministic bytes that do not compress and contain no marker text.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A real one-page PDF of exactly `len` bytes (an unreferenced stream of noise pads it, so runs
/// of it do not compress or show in ciphertext), ending in `%%EOF` as lopdf writes it. Below a
/// real document's size: the magic and noise, enough for an upload that is never downloaded.
fn pdf(len: usize) -> Vec<u8> {
    use lopdf::{Document, Object, Stream, dictionary};
    let build = |pad: usize| {
        let mut doc = Document::with_version("1.7");
        let tree = doc.new_object_id();
        let content = doc.add_object(Stream::new(
            dictionary! {},
            b"BT /F1 12 Tf 72 700 Td (Referral) Tj ET".to_vec(),
        ));
        let page = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => tree, "Contents" => content,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        });
        doc.objects.insert(
            tree,
            Object::Dictionary(
                dictionary! { "Type" => "Pages", "Count" => 1, "Kids" => vec![page.into()] },
            ),
        );
        let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => tree });
        doc.trailer.set("Root", catalog);
        doc.add_object(Stream::new(dictionary! {}, noise(pad, len as u64)).with_compression(false));
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).unwrap();
        bytes
    };
    let bare = build(0).len();
    if len < bare {
        let mut bytes = b"%PDF-1.7\n".to_vec();
        bytes.extend(noise(len.saturating_sub(bytes.len()), len as u64));
        bytes.truncate(len);
        return bytes;
    }
    // The padding's own length digits move the size a little: converge on it.
    let mut pad = len - bare;
    for _ in 0..8 {
        let bytes = build(pad);
        if bytes.len() == len {
            return bytes;
        }
        pad = (pad + len).checked_sub(bytes.len()).unwrap();
    }
    panic!("no PDF of exactly {len} bytes");
}

/// A downloaded PDF's stamp, checked and taken off: the body is the original bytes followed by
/// an incremental update that draws the stamp on every page and puts the download id (the
/// `Clinicd-Download-Id` header) in the document information. Returns the original bytes.
fn unstamp(headers: &actix_web::http::header::HeaderMap, body: Vec<u8>) -> Vec<u8> {
    let doc = lopdf::Document::load_mem(&body).expect("the stamped PDF parses");
    let download_id = headers
        .get("clinicd-download-id")
        .unwrap()
        .to_str()
        .unwrap();
    let info = doc
        .get_dictionary(doc.trailer.get(b"Info").unwrap().as_reference().unwrap())
        .unwrap();
    assert_eq!(
        info.get(b"ClinicdDownloadId").unwrap().as_str().unwrap(),
        download_id.as_bytes()
    );
    for page in doc.get_pages().into_values() {
        let content = String::from_utf8_lossy(&doc.get_page_content(page)).into_owned();
        assert!(
            content.contains("/ClinicdStamp"),
            "a page without the stamp: {content}"
        );
    }
    // The update begins right after the original's own end-of-file marker.
    let ends: Vec<usize> = body
        .windows(5)
        .enumerate()
        .filter(|(_, w)| *w == b"%%EOF")
        .map(|(i, _)| i + 5)
        .collect();
    assert!(ends.len() >= 2, "no incremental update after the original");
    body[..ends[ends.len() - 2]].to_vec()
}

fn png(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(noise(len.saturating_sub(bytes.len()), len as u64 + 7));
    bytes
}

fn text(len: usize) -> Vec<u8> {
    b"Potassium 4.1 mmol/L, within range.\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// A multipart body from `(part name, file name, bytes)`.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, content) in parts {
        body.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
        );
        if let Some(filename) = filename {
            body.extend(format!("; filename=\"{filename}\"\r\nContent-Type: image/png").bytes());
        }
        body.extend(b"\r\n\r\n");
        body.extend_from_slice(content);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").bytes());
    body
}

fn upload_request(patient: &str, token: &str, body: Vec<u8>) -> TestRequest {
    bearer(
        TestRequest::post()
            .uri(&format!("/api/patients/{patient}/files"))
            .insert_header((
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            ))
            .set_payload(body),
        token,
    )
}

async fn upload(app: &TestApp, patient: &str, token: &str, name: &str, bytes: &[u8]) -> Value {
    let response = app
        .call(upload_request(
            patient,
            token,
            form(&[
                ("category", None, b"lab_result"),
                ("file", Some(name), bytes),
            ]),
        ))
        .await;
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// Status, headers and the body, or `None` if the body stream failed part way; a PDF's stamp
/// checked and taken off (`unstamp`).
async fn download(
    app: &TestApp,
    id: &str,
    token: &str,
) -> (u16, actix_web::http::header::HeaderMap, Option<Vec<u8>>) {
    let (status, headers, body) = download_as_sent(app, id, token).await;
    // A PDF comes stamped: the stamp is checked here, and callers compare the original bytes.
    let is_pdf = headers
        .get("content-type")
        .is_some_and(|t| t.as_bytes() == b"application/pdf");
    let body = match body {
        Some(body) if status == 200 && is_pdf => Some(unstamp(&headers, body)),
        other => other,
    };
    (status, headers, body)
}

/// The download exactly as sent.
async fn download_as_sent(
    app: &TestApp,
    id: &str,
    token: &str,
) -> (u16, actix_web::http::header::HeaderMap, Option<Vec<u8>>) {
    let service = test::init_service(clinicd_api::app_with(app.state.clone(), probe_routes)).await;
    let request = bearer(TestRequest::get().uri(&format!("/api/files/{id}")), token);
    let response = test::call_service(&service, request.to_request()).await;
    let status = response.status().as_u16();
    let mut headers = response.headers().clone();
    // What the server writes as Content-Length: the body's declared size.
    if let actix_web::body::BodySize::Sized(n) =
        actix_web::body::MessageBody::size(response.response().body())
    {
        headers.insert(
            actix_web::http::header::CONTENT_LENGTH,
            n.to_string().parse().unwrap(),
        );
    }
    let body = actix_web::body::to_bytes(response.into_body())
        .await
        .ok()
        .map(|b| b.to_vec());
    (status, headers, body)
}

/// A patient registered by the front desk, with `team` on its care team.
async fn new_patient(
    app: &TestApp,
    team: &[clinicd_identity::users::UserId],
    family: &str,
) -> String {
    let desk_name = format!("desk.{}", Uuid::now_v7().simple());
    let (_, desk) = member(app, &desk_name, &["Staff"]).await;
    let created = app
        .call(send(
            "POST",
            "/api/patients",
            &desk,
            Some(json!({"given_name": "Pat", "family_name": family, "date_of_birth": "1970-05-06", "sex": "unknown"})),
        ))
        .await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    for user in team {
        let added = app
            .call(send(
                "POST",
                &format!("/api/patients/{id}/care-team"),
                &desk,
                Some(json!({"user_id": user.0, "reason": "covering this patient's care"})),
            ))
            .await;
        assert_eq!(added.status, 201);
    }
    id
}

/// A provider, dr.grey, with a patient on their care team, and files going to `dir`.
struct Clinic {
    dir: tempfile::TempDir,
    app: TestApp,
    grey: clinicd_identity::users::UserId,
    token: String,
    patient: String,
}

async fn clinic(pool: &PgPool, files: FileSettings) -> Clinic {
    let dir = tempfile::tempdir().unwrap();
    let app = app(pool, dir.path(), files);
    let (grey, token) = member(&app, "dr.grey", &["Provider"]).await;
    let patient = new_patient(&app, &[grey], "Smith").await;
    Clinic {
        dir,
        app,
        grey,
        token,
        patient,
    }
}

async fn upload_id(app: &TestApp, patient: &str, token: &str, name: &str, bytes: &[u8]) -> String {
    upload(app, patient, token, name, bytes).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn object_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("objects").join("files").join(id)
}

/// Objects in the store, not counting the in-progress area.
fn objects(dir: &Path) -> usize {
    let partial = std::fs::read_dir(dir.join(".partial"))
        .map(|d| d.count())
        .unwrap_or(0);
    let complete = std::fs::read_dir(dir.join("objects").join("files"))
        .map(|d| d.count())
        .unwrap_or(0);
    partial + complete
}

async fn file_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[sqlx::test(migrations = "../../migrations")]
async fn files_round_trip_byte_identical_and_rest_encrypted(pool: PgPool) {
    let Clinic {
        dir,
        app,
        grey: _,
        token,
        patient,
    } = clinic(&pool, FileSettings::default()).await;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.txt", Vec::new(), "text/plain"),
        ("one.txt", b"K".to_vec(), "text/plain"),
        ("segment.txt", text(SEGMENT), "text/plain"),
        ("two-segments.txt", text(2 * SEGMENT), "text/plain"),
        ("scan.pdf", pdf(3 * 1024 * 1024 + 17), "application/pdf"),
        ("card.png", png(SEGMENT + 1), "image/png"),
    ];
    let mut ids = Vec::new();
    for (name, bytes, mime) in &cases {
        let stored = upload(&app, &patient, &token, name, bytes).await;
        assert_eq!(stored["content_type"], *mime, "{name}");
        assert_eq!(stored["size"], bytes.len() as u64);
        assert_eq!(stored["name"], *name);
        assert_eq!(stored["category"], "lab_result");
        let id = stored["id"].as_str().unwrap().to_owned();

        let (status, headers, body) = download(&app, &id, &token).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(
            body.as_deref(),
            Some(&bytes[..]),
            "{name} is not byte-identical"
        );
        assert!(
            headers
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(mime)
        );
        assert_eq!(
            headers.get("content-disposition").unwrap(),
            format!("attachment; filename=\"{name}\"").as_str()
        );
        assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(headers.get("cache-control").unwrap(), "no-store");
        let sent: usize = headers
            .get("content-length")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if *mime == "application/pdf" {
            // The stamp is appended (checked by `download`).
            assert!(sent > bytes.len(), "{name}");
        } else {
            assert_eq!(sent, bytes.len(), "{name}");
        }
        assert!(headers.contains_key("repr-digest"));

        // At rest: the object is our format, and no run of the plaintext appears in it.
        let object = std::fs::read(object_path(dir.path(), &id)).unwrap();
        assert!(object.starts_with(b"CLNF"));
        if bytes.len() >= 32 {
            assert!(!contains(
                &object,
                &bytes[bytes.len() / 2..bytes.len() / 2 + 32]
            ));
        }
        ids.push(id);
    }

    let listed = app
        .call(send(
            "GET",
            &format!("/api/patients/{patient}/files"),
            &token,
            None,
        ))
        .await;
    assert_eq!(listed.status, 200);
    let listed: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids);

    // The row holds no name, digest or key in clear.
    let row: Vec<u8> = sqlx::query_scalar(
        "SELECT convert_to(f::text, 'UTF8') FROM files f WHERE name IS NOT NULL LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    for name in ["empty.txt", "scan", "card.png"] {
        assert!(!contains(&row, name.as_bytes()), "{name} in clear in a row");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn tampered_truncated_reordered_or_swapped_objects_are_refused_and_audited(pool: PgPool) {
    let Clinic {
        dir,
        app,
        grey: _,
        token,
        patient,
    } = clinic(&pool, FileSettings::default()).await;
    // 20 full segments and a short one: more than two of the server's decryption batches, so
    // damage late in the object is found after the response has started.
    let bytes = png(20 * SEGMENT + 100);
    let a = upload_id(&app, &patient, &token, "a.png", &bytes).await;
    let b = upload_id(&app, &patient, &token, "b.png", &bytes).await;
    let path = object_path(dir.path(), &a);
    let original = std::fs::read(&path).unwrap();
    let other = std::fs::read(object_path(dir.path(), &b)).unwrap();
    let header_len = original.len() - (bytes.len() + 21 * 16);
    let seg = SEGMENT + 16;

    let flip = |at: usize| {
        let mut o = original.clone();
        o[at] ^= 0x01;
        o
    };
    let mut swapped = original.clone();
    let (s1, s2) = (header_len + 14 * seg, header_len + 15 * seg);
    let first = original[s1..s1 + seg].to_vec();
    swapped.copy_within(s2..s2 + seg, s1);
    swapped[s2..s2 + seg].copy_from_slice(&first);
    let mut other_header = other[..header_len].to_vec();
    other_header.extend_from_slice(&original[header_len..]);

    // (what, damaged object, refused before the response starts?)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("a flipped header byte", flip(10), true),
        (
            "a flipped byte in the first segment",
            flip(header_len + 5),
            true,
        ),
        (
            "a flipped byte in a later segment",
            flip(header_len + 15 * seg + 5),
            false,
        ),
        (
            "a flipped byte in the final segment",
            flip(original.len() - 3),
            false,
        ),
        (
            "the object truncated",
            original[..original.len() - 50].to_vec(),
            false,
        ),
        (
            "cut at a segment boundary",
            original[..header_len + 12 * seg].to_vec(),
            false,
        ),
        ("two segments swapped", swapped, false),
        ("another file's object in its place", other.clone(), true),
        ("another file's header", other_header, true),
    ];
    for (what, damaged, early) in cases {
        std::fs::write(&path, &damaged).unwrap();
        let before: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM security_events WHERE kind = 'file_integrity_failure'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let (status, _, body) = download(&app, &a, &token).await;
        if early {
            assert_eq!(status, 502, "{what}");
            let problem: Value = serde_json::from_slice(&body.unwrap()).unwrap();
            assert_eq!(problem["code"], "file_integrity_failed", "{what}");
        } else {
            assert_eq!(status, 200, "{what}");
            assert!(
                body.is_none(),
                "{what}: the body must end in an error, not complete"
            );
        }
        let after: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM security_events WHERE kind = 'file_integrity_failure'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(after, before + 1, "{what}: no security event");
    }

    // The refusals before the response are in the trail with their status and the file.
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'download' AND status_code = 502 AND resource_id = $1",
    )
    .bind(&a)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(refused, 4);

    std::fs::write(&path, &original).unwrap();
    let (status, _, body) = download(&app, &a, &token).await;
    assert_eq!((status, body.as_deref()), (200, Some(&bytes[..])));
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_size_limit_and_type_sniffing_refuse_with_problems_and_leave_nothing(pool: PgPool) {
    let limits = FileSettings {
        max_bytes: 200 * 1024,
        allowed: ["pdf", "png", "text"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect(),
        ..FileSettings::default()
    };
    let Clinic {
        dir,
        app,
        token,
        patient,
        ..
    } = clinic(&pool, limits).await;

    let mut binary_later = text(3 * SEGMENT);
    binary_later[2 * SEGMENT + 9] = 0;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("over the limit", pdf(200 * 1024 + 1), 413, "file_too_large"),
        (
            "a zip",
            [b"PK\x03\x04".as_slice(), &noise(5000, 1)].concat(),
            415,
            "unsupported_file_type",
        ),
        (
            "an executable",
            [b"\x7fELF".as_slice(), &noise(5000, 2)].concat(),
            415,
            "unsupported_file_type",
        ),
        (
            "a JPEG (not allowed here)",
            [b"\xff\xd8\xff\xe0".as_slice(), &noise(100, 3)].concat(),
            415,
            "unsupported_file_type",
        ),
        (
            "text turning binary after two segments",
            binary_later,
            415,
            "unsupported_file_type",
        ),
        (
            "invalid UTF-8",
            b"caf\xe9 au lait".to_vec(),
            415,
            "unsupported_file_type",
        ),
    ];
    for (what, bytes, status, code) in cases {
        let response = app
            .call(upload_request(
                &patient,
                &token,
                form(&[
                    ("category", None, b"other"),
                    ("file", Some("x.png"), &bytes),
                ]),
            ))
            .await;
        response.assert_problem(status, code);
        assert_eq!(file_rows(&pool).await, 0, "{what}");
        assert_eq!(objects(dir.path()), 0, "{what}");
    }

    // Exactly the limit is fine; a declared length far over it is refused before reading.
    upload(&app, &patient, &token, "limit.pdf", &pdf(200 * 1024)).await;
    let response = app
        .call(
            upload_request(&patient, &token, form(&[("category", None, b"other")]))
                .insert_header(("Content-Length", "999999999")),
        )
        .await;
    response.assert_problem(413, "file_too_large");

    // The part's declared type is ignored: a PDF sent as image/png is stored as a PDF.
    let stored = upload(&app, &patient, &token, "looks-like.png", &pdf(1000)).await;
    assert_eq!(stored["content_type"], "application/pdf");
}

#[sqlx::test(migrations = "../../migrations")]
async fn malformed_forms_and_cut_uploads_leave_no_row_and_no_object(pool: PgPool) {
    let Clinic {
        dir,
        app,
        grey: _,
        token,
        patient,
    } = clinic(&pool, FileSettings::default()).await;
    let file = pdf(3 * SEGMENT);

    let json = app
        .call(send(
            "POST",
            &format!("/api/patients/{patient}/files"),
            &token,
            Some(json!({"file": "x"})),
        ))
        .await;
    json.assert_problem(415, "unsupported_media_type");

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "no category",
            form(&[("file", Some("a.pdf"), &file)]),
            400,
            "invalid_multipart",
        ),
        (
            "file first",
            form(&[("file", Some("a.pdf"), &file), ("category", None, b"other")]),
            400,
            "invalid_multipart",
        ),
        (
            "no file",
            form(&[("category", None, b"other")]),
            400,
            "invalid_multipart",
        ),
        (
            "an unknown category",
            form(&[
                ("category", None, b"selfie"),
                ("file", Some("a.pdf"), &file),
            ]),
            422,
            "invalid_field",
        ),
        (
            "an extra part",
            form(&[
                ("category", None, b"other"),
                ("file", Some("a.pdf"), &file),
                ("note", None, b"hi"),
            ]),
            400,
            "invalid_multipart",
        ),
    ];
    for (what, body, status, code) in cases {
        let response = app.call(upload_request(&patient, &token, body)).await;
        let problem = response.assert_problem(status, code);
        if code == "invalid_field" {
            assert_eq!(problem["field"], "category");
        }
        assert_eq!(file_rows(&pool).await, 0, "{what}");
        assert_eq!(objects(dir.path()), 0, "{what}");
    }

    // The connection drops mid-file: no closing boundary, the body ends inside the file.
    let whole = form(&[("category", None, b"other"), ("file", Some("a.pdf"), &file)]);
    let cut = whole[..whole.len() / 2].to_vec();
    let response = app.call(upload_request(&patient, &token, cut)).await;
    response.assert_problem(400, "upload_incomplete");
    assert_eq!(file_rows(&pool).await, 0);
    assert_eq!(objects(dir.path()), 0);

    // Each refusal is audited as an upload attempt naming the patient route, never a value.
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'upload' AND status_code >= 400",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 7);
}

/// A store whose writers, once their object is complete, wait for the test: the instant
/// between an upload's object and its row.
#[derive(Debug)]
struct Gated {
    inner: LocalStore,
    completed: Arc<Notify>,
    release: Arc<Notify>,
}

struct GatedWriter {
    inner: Box<dyn ObjectWriter>,
    completed: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait::async_trait]
impl ObjectStore for Gated {
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ObjectStoreError> {
        Ok(Box::new(GatedWriter {
            inner: self.inner.create(key).await?,
            completed: self.completed.clone(),
            release: self.release.clone(),
        }))
    }
    async fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>, ObjectStoreError> {
        self.inner.open(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.inner.delete(key).await
    }
}

#[async_trait::async_trait]
impl ObjectWriter for GatedWriter {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ObjectStoreError> {
        self.inner.write(bytes).await
    }
    async fn complete(self: Box<Self>) -> Result<(), ObjectStoreError> {
        self.inner.complete().await?;
        self.completed.notify_one();
        self.release.notified().await;
        Ok(())
    }
    async fn abort(self: Box<Self>) -> Result<(), ObjectStoreError> {
        self.inner.abort().await
    }
}

/// The server drops a handler whose client goes away. Dropped just after the object became
/// complete and before its row was written, an upload must still leave nothing: not an
/// object without a row (unreadable: its key was never stored), and not a file nobody
/// audited.
#[sqlx::test(migrations = "../../migrations")]
async fn an_upload_cancelled_between_object_and_row_leaves_nothing(pool: PgPool) {
    let Clinic {
        dir,
        mut app,
        grey: _,
        token,
        patient,
    } = clinic(&pool, FileSettings::default()).await;
    let (completed, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    app.state.files = Files::new(
        pool.clone(),
        app.state.identity.keyring.clone(),
        Arc::new(Gated {
            inner: LocalStore::new(dir.path()),
            completed: completed.clone(),
            release: release.clone(),
        }),
        FileSettings::default(),
    );
    let body = form(&[
        ("category", None, b"other"),
        ("file", Some("a.pdf"), &pdf(3 * SEGMENT)),
    ]);

    tokio::select! {
        response = app.call(upload_request(&patient, &token, body)) => {
            panic!("the upload finished past the gate: {}", response.status)
        }
        () = completed.notified() => {} // the request is dropped here, as the server would
    }
    assert_eq!(
        objects(dir.path()),
        1,
        "the object was complete when the client left"
    );
    release.notify_one();

    let mut left = (1, 1);
    for _ in 0..500 {
        left = (file_rows(&pool).await, objects(dir.path()));
        if left == (0, 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        left,
        (0, 0),
        "rows and objects left by the cancelled upload"
    );

    // The store works on: the next upload through the same gate is recorded.
    release.notify_one();
    let id = upload_id(&app, &patient, &token, "b.pdf", &pdf(100)).await;
    assert_eq!(file_rows(&pool).await, 1);
    assert!(object_path(dir.path(), &id).exists());
}

#[sqlx::test(migrations = "../../migrations")]
async fn uploads_and_downloads_are_audited_and_deletes_are_soft(pool: PgPool) {
    let Clinic {
        dir,
        app,
        grey,
        token,
        patient,
    } = clinic(&pool, FileSettings::default()).await;
    let id = upload_id(&app, &patient, &token, "referral.pdf", &pdf(5000)).await;
    assert_eq!(download(&app, &id, &token).await.0, 200);

    let events: Vec<(String, i32, Option<Uuid>, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT action, status_code::int, actor_user_id, patient_id, resource_id FROM audit_events \
         WHERE resource_type = 'file' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let patient_id: Uuid = patient.parse().unwrap();
    assert_eq!(
        events,
        vec![
            (
                "upload".into(),
                201,
                Some(grey.0),
                Some(patient_id),
                Some(id.clone())
            ),
            (
                "download".into(),
                200,
                Some(grey.0),
                Some(patient_id),
                Some(id.clone())
            ),
        ]
    );

    let deleted = app
        .call(send("DELETE", &format!("/api/files/{id}"), &token, None))
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(download(&app, &id, &token).await.0, 404);
    let again = app
        .call(send("DELETE", &format!("/api/files/{id}"), &token, None))
        .await;
    again.assert_problem(404, "not_found");
    let listed = app
        .call(send(
            "GET",
            &format!("/api/patients/{patient}/files"),
            &token,
            None,
        ))
        .await;
    assert_eq!(listed.json(), json!([]));
    // Kept for retention: the row and object remain, marked with who deleted it and until when.
    let (by, days): (Option<Uuid>, f64) = sqlx::query_as(
        "SELECT deleted_by, (extract(epoch FROM purge_after - deleted_at) / 86400)::float8 FROM files WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(by, Some(grey.0));
    assert_eq!(
        days.round() as u32,
        clinicd_files::service::DEFAULT_RETENTION_DAYS
    );
    assert!(object_path(dir.path(), &id).exists());

    // After retention, a purge removes object and row.
    let later = chrono::Utc::now() + chrono::Duration::days(7 * 366);
    let audit = |file: uuid::Uuid, patient: uuid::Uuid| clinicd_files::service::Audited {
        recorder: clinicd_audit::Recorder::new(
            app.state.audit.clone(),
            clinicd_audit::NewEvent::new(
                clinicd_audit::Action::Delete,
                clinicd_audit::Outcome::Success,
            ),
            Default::default(),
        ),
        status: None,
        note: clinicd_audit::Note {
            resource_id: Some(file.to_string()),
            patient_id: Some(patient),
            ..Default::default()
        },
    };
    assert_eq!(app.state.files.purge(later, &audit).await.unwrap(), 1);
    assert!(!object_path(dir.path(), &id).exists());
    assert_eq!(file_rows(&pool).await, 0);
    let purged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'delete' AND resource_id = $1 AND route IS NULL",
    )
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        purged, 1,
        "the purge is in the trail with the row's removal"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn rotation_rewrites_rows_never_objects(pool: PgPool) {
    let Clinic {
        dir,
        app,
        grey: _,
        token,
        patient,
    } = clinic(&pool, FileSettings::default()).await;
    let bytes = pdf(2 * SEGMENT + 3);
    let id = upload_id(&app, &patient, &token, "scan.pdf", &bytes).await;
    let object = std::fs::read(object_path(dir.path(), &id)).unwrap();
    let wrapped = || async {
        sqlx::query_scalar::<_, Vec<u8>>("SELECT data_key FROM files WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = wrapped().await;
    let keyring = app.state.identity.keyring.clone();

    // KEK rotation rewraps branch keys: the file's row and object both stay as they are.
    keyring.rotate_kek().await.unwrap();
    keyring.clear_caches();
    assert_eq!(wrapped().await, before);
    assert_eq!(
        download(&app, &id, &token).await.2.as_deref(),
        Some(&bytes[..])
    );

    // Re-keying after a compromise moves the data key to the patient's new key: the row
    // changes, the object does not, and the file still opens.
    keyring.rotate_subject_keys().await.unwrap();
    let outcome = keyring
        .rekey(
            "files-test",
            &clinicd_files::encrypted_columns(),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, clinicd_crypto::RekeyOutcome::Finished(ref r) if r.rows_moved == 3),
        "{outcome:?}"
    );
    keyring.clear_caches();
    assert_ne!(wrapped().await, before);
    assert_eq!(std::fs::read(object_path(dir.path(), &id)).unwrap(), object);
    assert_eq!(
        download(&app, &id, &token).await.2.as_deref(),
        Some(&bytes[..])
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn roles_and_care_teams_decide_who_reaches_a_file(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&pool, dir.path(), FileSettings::default());
    let (grey_id, grey) = member(&app, "dr.grey", &["Provider"]).await;
    let (house_id, house) = member(&app, "dr.house", &["Provider"]).await;
    let (reader_id, reader) = member(&app, "auditor.read", &["ReadOnly"]).await;
    let (_, admin) = member(&app, "it.admin", &["Admin"]).await;
    let (_, nobody) = member(&app, "no.roles", &[]).await;
    let patient = new_patient(&app, &[grey_id, reader_id], "Smith").await;
    new_patient(&app, &[house_id], "Jones").await;
    let bytes = pdf(1000);
    let id = upload_id(&app, &patient, &grey, "a.pdf", &bytes).await;
    let upload_form = || {
        form(&[
            ("category", None, b"other"),
            ("file", Some("b.pdf"), &bytes),
        ])
    };
    let list = format!("/api/patients/{patient}/files");
    let one = format!("/api/files/{id}");

    // Another team's provider: every route answers as if the patient and file did not exist.
    app.call(upload_request(&patient, &house, upload_form()))
        .await
        .assert_problem(404, "not_found");
    app.call(send("GET", &list, &house, None))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(download(&app, &id, &house).await.0, 404);
    app.call(send("DELETE", &one, &house, None))
        .await
        .assert_problem(404, "not_found");

    // Read-only on the team: lists and downloads, may not upload or delete.
    assert_eq!(
        app.call(send("GET", &list, &reader, None)).await.status,
        200
    );
    assert_eq!(
        download(&app, &id, &reader).await.2.as_deref(),
        Some(&bytes[..])
    );
    app.call(upload_request(&patient, &reader, upload_form()))
        .await
        .assert_problem(403, "permission_denied");
    app.call(send("DELETE", &one, &reader, None))
        .await
        .assert_problem(403, "permission_denied");

    // The administrator and a user with no role: refused everything; anonymous: 401.
    for token in [&admin, &nobody] {
        app.call(upload_request(&patient, token, upload_form()))
            .await
            .assert_problem(403, "permission_denied");
        app.call(send("GET", &list, token, None))
            .await
            .assert_problem(403, "permission_denied");
        assert_eq!(download(&app, &id, token).await.0, 403);
        app.call(send("DELETE", &one, token, None))
            .await
            .assert_problem(403, "permission_denied");
    }
    let anonymous = app.call(TestRequest::get().uri(&one)).await;
    anonymous.assert_problem(401, "unauthenticated");

    // A malformed id is a 400, a random one a 404.
    app.call(send("GET", "/api/files/not-a-uuid", &grey, None))
        .await
        .assert_problem(400, "invalid_parameters");
    assert_eq!(
        download(&app, &Uuid::now_v7().to_string(), &grey).await.0,
        404
    );

    // Nothing changed through the refusals: one file, still readable by its team.
    assert_eq!(file_rows(&pool).await, 1);
    assert_eq!(
        download(&app, &id, &grey).await.2.as_deref(),
        Some(&bytes[..])
    );

    // In an emergency the other provider breaks the glass: the file opens, and the trail says
    // how it was reached.
    let granted = app
        .call(send(
            "POST",
            &format!("/api/patients/{patient}/break-glass"),
            &house,
            Some(json!({"reason": "Patient collapsed in the waiting room; Dr Grey is in surgery"})),
        ))
        .await;
    assert_eq!(granted.status, 201);
    assert_eq!(
        download(&app, &id, &house).await.2.as_deref(),
        Some(&bytes[..])
    );
    let access: Value = sqlx::query_scalar(
        "SELECT metadata->'access' FROM audit_events WHERE action = 'download' AND actor_user_id = $1 \
         AND outcome = 'success'",
    )
    .bind(house_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(access, "break_glass");
}

#[sqlx::test(migrations = "../../migrations")]
async fn uploads_count_against_the_per_user_upload_limit(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(&pool, dir.path(), FileSettings::default());
    let mut settings = roomy_settings();
    settings.rate_limits.upload = clinicd_api::rate_limit::QuotaSpec {
        count: std::num::NonZeroU32::new(3).unwrap(),
        window: std::time::Duration::from_secs(3600),
    };
    app.state.limits = Arc::new(clinicd_api::rate_limit::Limits::new(settings.rate_limits));
    let (grey_id, grey) = member(&app, "dr.grey", &["Provider"]).await;
    let (other_id, other) = member(&app, "dr.other", &["Provider"]).await;
    let patient = new_patient(&app, &[grey_id], "Smith").await;
    let mine = new_patient(&app, &[other_id], "Jones").await;
    for _ in 0..3 {
        upload(&app, &patient, &grey, "a.txt", b"ok").await;
    }
    let limited = app
        .call(upload_request(
            &patient,
            &grey,
            form(&[("category", None, b"other"), ("file", Some("a.txt"), b"ok")]),
        ))
        .await;
    limited.assert_problem(429, "rate_limited");
    // Per user: a colleague still uploads, and downloads are not counted as uploads.
    upload(&app, &mine, &other, "b.txt", b"ok").await;
    assert_eq!(file_rows(&pool).await, 4);
}

/// What a clinic on AWS sees, against moto: documents go up in parts, come back
/// byte-identical, sit in the bucket as ciphertext; a flipped byte in the bucket is refused
/// and audited; a cut upload leaves no object and no multipart upload behind.
#[sqlx::test(migrations = "../../migrations")]
async fn against_s3_files_are_ciphertext_in_the_bucket_and_tampering_is_caught(pool: PgPool) {
    use clinicd_files::s3::{MIN_PART_SIZE, S3Store};
    let (s3, bucket) = clinicd_test_support::moto_s3_bucket().await;
    let mut app = app(&pool, Path::new("/nonexistent"), FileSettings::default());
    app.state.files = Files::new(
        pool.clone(),
        app.state.identity.keyring.clone(),
        Arc::new(S3Store::new(s3.clone(), &bucket, "clinic-a/").with_part_size(MIN_PART_SIZE)),
        FileSettings {
            idle_timeout: std::time::Duration::from_secs(2),
            ..FileSettings::default()
        },
    );
    let (grey, token) = member(&app, "dr.grey", &["Provider"]).await;
    let patient = new_patient(&app, &[grey], "Smith").await;
    let in_bucket = |id: String| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move {
            clinicd_test_support::s3_object(&s3, &bucket, &format!("clinic-a/files/{id}")).await
        }
    };

    let scan = pdf(11 * 1024 * 1024 + 5);
    let card = png(40_000);
    let mut ids = Vec::new();
    for (name, bytes) in [("scan.pdf", &scan), ("card.png", &card)] {
        let id = upload_id(&app, &patient, &token, name, bytes).await;
        let (status, _, body) = download(&app, &id, &token).await;
        assert_eq!((status, body.as_deref()), (200, Some(&bytes[..])), "{name}");
        let object = in_bucket(id.clone()).await;
        assert!(object.starts_with(b"CLNF"));
        assert!(
            !contains(&object, &bytes[20_000..20_032]),
            "{name} in clear in the bucket"
        );
        ids.push(id);
    }

    // One byte flipped in the bucket: refused, and a security event names the file.
    let mut object = in_bucket(ids[1].clone()).await;
    let middle = object.len() / 2;
    object[middle] ^= 0x20;
    s3.put_object()
        .bucket(&bucket)
        .key(format!("clinic-a/files/{}", ids[1]))
        .body(object.into())
        .send()
        .await
        .unwrap();
    let (status, _, body) = download(&app, &ids[1], &token).await;
    assert!(status == 502 || body.is_none(), "served a tampered object");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM security_events WHERE kind = 'file_integrity_failure' AND detail->>'reason' = $1",
    )
    .bind(format!("file {}", ids[1]))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 1);

    // Cut after more than a part has gone up: no row, no object, no upload in progress.
    let whole = form(&[
        ("category", None, b"other"),
        ("file", Some("big.pdf"), &scan),
    ]);
    let cut = whole[..7 * 1024 * 1024].to_vec();
    app.call(upload_request(&patient, &token, cut))
        .await
        .assert_problem(400, "upload_incomplete");
    assert_eq!(file_rows(&pool).await, 2);
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert_eq!(listed.contents().len(), 2);
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.uploads().len(), 0);
}

/// A body that ends inside the file (with a `\r` near its end, which the multipart parser
/// alone would wait on forever) or a client that stalls: refused after the idle timeout, and
/// nothing is left.
#[sqlx::test(migrations = "../../migrations")]
async fn a_stalled_upload_is_abandoned_after_the_idle_timeout(pool: PgPool) {
    let settings = FileSettings {
        idle_timeout: std::time::Duration::from_millis(500),
        ..FileSettings::default()
    };
    let Clinic {
        dir,
        app,
        token,
        patient,
        ..
    } = clinic(&pool, settings).await;
    let mut file = pdf(200_000);
    file[150_000..150_002].copy_from_slice(b"\r\x01");
    let whole = form(&[
        ("category", None, b"other"),
        ("file", Some("big.pdf"), &file),
    ]);
    let start = whole.windows(9).position(|w| w == b"%PDF-1.7\n").unwrap();
    let cut_at = start + 150_001;
    assert_eq!(whole[cut_at - 1], b'\r');
    let response = app
        .call(upload_request(&patient, &token, whole[..cut_at].to_vec()))
        .await;
    response.assert_problem(400, "upload_incomplete");
    assert_eq!(file_rows(&pool).await, 0);
    assert_eq!(objects(dir.path()), 0);

    // The whole file arrives and its part is closed, but the form never ends (here the body
    // ends; a client holding the connection open runs into the idle timeout): the stored file
    // is removed again.
    let closing = format!("--{BOUNDARY}--\r\n");
    let unfinished = whole[..whole.len() - closing.len() + BOUNDARY.len() + 2].to_vec();
    assert!(unfinished.ends_with(format!("\r\n--{BOUNDARY}").as_bytes()));
    let response = app.call(upload_request(&patient, &token, unfinished)).await;
    assert_eq!(response.status, 400);
    let code = response.json()["code"].as_str().unwrap().to_owned();
    assert!(
        ["invalid_multipart", "upload_incomplete"].contains(&code.as_str()),
        "{code}"
    );
    assert_eq!(file_rows(&pool).await, 0);
    assert_eq!(objects(dir.path()), 0);
}

/// A document of `pages` pages, as a scanner would write it (no information dictionary).
fn pdf_pages(pages: usize) -> Vec<u8> {
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.4");
    let tree = doc.new_object_id();
    let kids: Vec<Object> = (0..pages)
        .map(|i| {
            let content = doc.add_object(Stream::new(
                dictionary! {},
                format!("BT /F1 12 Tf 72 700 Td (result page {i}) Tj ET").into_bytes(),
            ));
            doc.add_object(
                dictionary! { "Type" => "Page", "Parent" => tree, "Contents" => content },
            )
            .into()
        })
        .collect();
    doc.objects.insert(
        tree,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Count" => pages as i64, "Kids" => kids,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => tree });
    doc.trailer.set("Root", catalog);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

/// Every page of a downloaded PDF shows who took it, when, the request and download ids and
/// the PHI notice; the document information holds the download id of the audit event; the
/// length and digest headers describe the stamped copy; and a PDF that cannot carry the stamp
/// is refused (422, audited) rather than released without it.
#[sqlx::test(migrations = "../../migrations")]
async fn a_downloaded_pdf_carries_the_watermark_on_every_page(pool: PgPool) {
    use aws_lc_rs::digest;
    use base64::Engine;
    let Clinic {
        dir: _dir,
        app,
        grey: _,
        token,
        patient,
    } = clinic(&pool, FileSettings::default()).await;
    let original = pdf_pages(3);
    let id = upload_id(&app, &patient, &token, "results.pdf", &original).await;

    let (status, headers, body) = download_as_sent(&app, &id, &token).await;
    assert_eq!(status, 200);
    let body = body.unwrap();
    assert!(body.starts_with(&original), "the original bytes come first");
    assert_eq!(
        headers.get("content-length").unwrap(),
        body.len().to_string().as_str()
    );
    let sha = digest::digest(&digest::SHA256, &body);
    assert_eq!(
        headers.get("repr-digest").unwrap().to_str().unwrap(),
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(sha.as_ref())
        )
    );
    let download_id = headers
        .get("clinicd-download-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let request_id = headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let at = headers
        .get("clinicd-downloaded-at")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();

    let doc = lopdf::Document::load_mem(&body).unwrap();
    let pages: Vec<_> = doc.get_pages().into_values().collect();
    assert_eq!(pages.len(), 3);
    for (n, page) in pages.iter().enumerate() {
        let content = String::from_utf8_lossy(&doc.get_page_content(*page)).into_owned();
        assert!(content.contains(&format!("(result page {n})")));
        let name = content
            .split('/')
            .find_map(|part| part.strip_prefix("ClinicdStamp"))
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("page {n} is not stamped: {content}"));
        let (resources, _) = doc.get_page_resources(*page).unwrap();
        let form = resources
            .unwrap()
            .get(b"XObject")
            .unwrap()
            .as_dict()
            .unwrap()
            .get(format!("ClinicdStamp{name}").as_bytes())
            .unwrap()
            .as_reference()
            .unwrap();
        let drawn =
            String::from_utf8_lossy(&doc.get_object(form).unwrap().as_stream().unwrap().content)
                .into_owned();
        for fact in [
            "Downloaded by dr.grey",
            &at,
            &request_id,
            &download_id,
            "confidential: contains PHI",
        ] {
            assert!(drawn.contains(fact), "page {n} lacks {fact}: {drawn}");
        }
    }
    assert_eq!(unstamp(&headers, body), original);

    // The audit event holds the same download id.
    let metadata: serde_json::Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_events WHERE resource_type = 'file' AND action = 'download' \
         AND resource_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(metadata["download_id"], download_id.as_str());
    assert_eq!(metadata["watermarked"], true);

    // A file that sniffs as a PDF but is none (or is password-protected) is not released.
    let broken = upload_id(&app, &patient, &token, "broken.pdf", &pdf(300)).await;
    let (status, headers, body) = download_as_sent(&app, &broken, &token).await;
    assert_eq!(status, 422);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    let problem: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(problem["code"], "pdf_unstampable");
    let refused: i32 = sqlx::query_scalar(
        "SELECT status_code::int FROM audit_events WHERE resource_type = 'file' \
         AND resource_id = $1 AND action = 'download'",
    )
    .bind(&broken)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(refused, 422);

    // One written by hand, its cross-reference offsets wrong, is rewritten clean and stamped.
    let damaged = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
        2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
        3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >> endobj\n\
        4 0 obj << /Length 33 >> stream\nBT /F1 12 Tf 72 700 Td (Hi) Tj ET\nendstream endobj\n\
        xref\n0 5\n0000000000 65535 f \n0000000010 00000 n \n0000000020 00000 n \n\
        0000000030 00000 n \n0000000040 00000 n \ntrailer << /Size 5 /Root 1 0 R >>\n\
        startxref\n999\n%%EOF\n";
    let hand = upload_id(&app, &patient, &token, "hand.pdf", damaged).await;
    let (status, headers, body) = download_as_sent(&app, &hand, &token).await;
    assert_eq!(status, 200);
    let body = body.unwrap();
    assert_eq!(
        headers.get("content-length").unwrap(),
        body.len().to_string().as_str()
    );
    let doc = lopdf::Document::load_mem(&body).unwrap();
    assert!(doc.xref_recovery.is_none(), "the copy sent is sound");
    let info = doc
        .get_dictionary(doc.trailer.get(b"Info").unwrap().as_reference().unwrap())
        .unwrap();
    assert_eq!(
        info.get(b"ClinicdDownloadId").unwrap().as_str().unwrap(),
        headers.get("clinicd-download-id").unwrap().as_bytes()
    );
    for page in doc.get_pages().into_values() {
        let content = String::from_utf8_lossy(&doc.get_page_content(page)).into_owned();
        assert!(
            content.contains("(Hi)") && content.contains("/ClinicdStamp"),
            "{content}"
        );
    }
}
