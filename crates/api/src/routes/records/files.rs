//! Patients' documents: upload (multipart, streamed into an encrypted object), list, download
//! (streamed decryption, releasing only authenticated bytes) and soft delete. A file is reached
//! through its patient's care team; outside it a file id answers like one that does not exist.

use actix_multipart::Multipart;
use actix_web::body::SizedStream;
use actix_web::http::{StatusCode, header};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::{DateTime, Utc};
use clinicd_domain::Label;
use clinicd_files::service::Audited;
use clinicd_files::{Category, Download, FileError, FileInfo, NewFile, StoredLabel};
use clinicd_identity::security_events::{self, FileIntegrityFailure};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::pdf_stamp::Refusal;
use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::client_info;
use crate::extract::{Granted, Json, ReachableFile, ReachablePatientId};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

/// Room for the multipart framing around the file (boundaries, part headers, the category):
/// a declared body longer than the file limit plus this is refused before it is read.
const FRAMING_ALLOWANCE: u64 = 16 * 1024;
const MAX_NAME_CHARS: usize = 255;

/// The upload form. Parts in this order: `category`, then optionally `confidentiality` and
/// `sensitivity` (in that order), then `file`; no others.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the form for OpenAPI; the handler streams the parts itself"
)]
pub struct UploadForm {
    /// `insurance_card_front`, `insurance_card_back`, `photo_id`, `referral`, `lab_result` or
    /// `other`.
    category: String,
    /// The file's HL7 confidentiality: `N` (the default), `R` or `V`.
    confidentiality: Option<String>,
    /// Its HL7 sensitivity codes, comma-separated (`PSY`, `PSYTHPN`, `ETH`, `HIV`, `STD`, `SEX`,
    /// `GDIS`, `SDV`); a coded file is at least `R`. The uploader must be able to read what they
    /// label.
    sensitivity: Option<String>,
    /// The document. Its type is judged from its bytes (PDF, PNG, JPEG, TIFF or plain text
    /// unless the server allows fewer); the part's declared type is ignored. Its file name is
    /// kept, encrypted.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A document's bytes, exactly as uploaded.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(
    #[expect(dead_code, reason = "documents the body for OpenAPI; it is streamed")] Vec<u8>,
);

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub category: String,
    /// Judged from the content: `application/pdf`, `image/png`, `image/jpeg`, `image/tiff`
    /// or `text/plain`.
    pub content_type: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// The original file name, if the upload had one.
    pub name: Option<String>,
    /// `null` for a file brought in by `clinicd files import`.
    pub uploaded_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// HL7 confidentiality: `N`, `R` or `V` (docs/lifecycle.md).
    pub confidentiality: String,
    /// HL7 sensitivity codes (`PSY`, `PSYTHPN`, `ETH`, `HIV`, `STD`, `SEX`, `GDIS`, `SDV`).
    pub sensitivity: Vec<String>,
    /// The label withholds the file from the caller: its name is `null` and a download answers
    /// `403 restricted_content`.
    pub withheld: bool,
}

impl From<&FileInfo> for FileView {
    fn from(f: &FileInfo) -> Self {
        Self {
            id: f.id,
            patient_id: f.patient_id,
            category: f.category.as_str().to_owned(),
            content_type: f.content_type.mime().to_owned(),
            size: f.size,
            sha256: hex::encode(f.sha256),
            name: f.name.clone(),
            uploaded_by: f.uploaded_by,
            created_at: f.created_at,
            confidentiality: f.label.confidentiality.clone(),
            sensitivity: f.label.sensitivity.clone(),
            withheld: false,
        }
    }
}

impl FileView {
    /// The file as a caller its label keeps out sees it: no name (a name can say as much as
    /// the content) and no digest.
    fn withheld(f: &FileInfo) -> Self {
        Self {
            name: None,
            sha256: String::new(),
            withheld: true,
            ..Self::from(f)
        }
    }
}

/// A file's label in the domain's terms.
pub(crate) fn label_of(label: &StoredLabel) -> Label {
    Label::from_stored(&label.confidentiality, &label.sensitivity)
}

pub(crate) fn stored(label: &Label) -> StoredLabel {
    StoredLabel {
        confidentiality: label.confidentiality.as_str().to_owned(),
        sensitivity: label.codes(),
    }
}

/// Uploads a document to a patient in the caller's care team.
#[utoipa::path(
    post,
    path = "/api/patients/{id}/files",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored, encrypted; nothing is stored unless the whole file arrived", body = FileView),
        (status = 400, description = "Not multipart/form-data, parts missing, out of order or extra (invalid_multipart), or the body ended early (upload_incomplete)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `file:upload` (permission_denied), or a label the uploader could not read (restricted_content)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the limit (file_too_large)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The content is not an allowed type (unsupported_file_type)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown category, or a bad confidentiality or sensitivity code (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Upload rate limit (per user)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The file store is unavailable (storage_unavailable)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload(
    state: web::Data<ApiState>,
    audit: Audit,
    patient: ReachablePatientId,
    Granted(grants): Granted,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let limit = state.files.settings().max_bytes;
    if declared_length(&req).is_some_and(|len| len > limit.saturating_add(FRAMING_ALLOWANCE)) {
        return Err(ApiError::FileTooLarge { limit });
    }
    let idle = state.files.settings().idle_timeout;
    let mut form = Multipart::new(req.headers(), payload);
    let category = within(idle, read_category(&mut form)).await??;
    let (label, mut file) = within(idle, read_label(&mut form)).await??;
    // At least the patient's own label, the floor of their record.
    let label = label.at_least(&state.patients.label(patient.0).await?);
    // No one labels a file so that they could not read it themselves.
    super::guard(&state, &grants, patient.reach(), &label)?;
    let name = file
        .content_disposition()
        .and_then(|d| d.get_filename())
        .and_then(base_name);
    let new = NewFile {
        patient_id: patient.0,
        uploaded_by: Some(patient.user().0),
        category,
        name,
        now: state.rbac.now(),
        label: stored(&label),
    };
    let staged = state
        .files
        .stage(new, with_idle_timeout(&mut file, idle))
        .await?;
    drop(file);
    // Only the closing boundary may follow: anything else (or nothing, for too long) voids
    // the upload before anything is stored.
    let refused = match within(idle, form.next()).await {
        Ok(None) => None,
        Ok(Some(Ok(_))) => Some(ApiError::InvalidMultipart(
            "only a `category` and a `file` part are accepted",
        )),
        Ok(Some(Err(e))) => Some(multipart_error(&e)),
        Err(stalled) => Some(stalled),
    };
    if let Some(refused) = refused {
        staged.abort().await;
        return Err(refused);
    }
    let preview = staged.info();
    let note = AuditNote {
        patient_id: Some(patient.0),
        resource_id: Some(preview.id.to_string()),
        metadata: Some(serde_json::json!({
            "category": preview.category.as_str(),
            "content_type": preview.content_type.mime(),
            "size": preview.size,
            // The level only: a code such as HIV beside a patient id is itself sensitive.
            "confidentiality": preview.label.confidentiality,
        })),
        ..AuditNote::default()
    };
    // The row and its event commit together in the recording task (see `Staged::commit`).
    let recorded = Audited {
        recorder: audit.recorder(),
        status: Some(StatusCode::CREATED.as_u16()),
        note,
    };
    let info = staged.commit(recorded).await.map_err(|error| match error {
        FileError::Audit(error) => audit.failed(&error),
        other => other.into(),
    })?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/files/{}", info.id)))
        .json(FileView::from(&info)))
}

/// `work`, or `upload_incomplete` if it makes no progress for `idle` (a stalled client).
async fn within<T>(
    idle: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(idle, work)
        .await
        .map_err(|_| ApiError::UploadIncomplete)
}

/// The part's bytes, failing if none arrive for `idle`. Besides stalled clients this covers a
/// body that ends inside the file with a `\r` among its last bytes, on which the multipart
/// parser (actix-multipart 0.7) waits for more input forever instead of reporting the end.
fn with_idle_timeout(
    field: &mut actix_multipart::Field,
    idle: std::time::Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin + '_ {
    Box::pin(futures_util::stream::unfold(
        Some(field),
        move |field| async move {
            let field = field?;
            match tokio::time::timeout(idle, field.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(field))),
                Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
                Ok(None) => None,
                Err(_) => Some((Err("no data within the idle timeout".to_owned()), None)),
            }
        },
    ))
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn multipart_error(error: &actix_multipart::MultipartError) -> ApiError {
    use actix_multipart::MultipartError as E;
    match error {
        E::ContentTypeMissing | E::ContentTypeParse | E::ContentTypeIncompatible => {
            ApiError::UnsupportedMediaType {
                expected: "multipart/form-data",
            }
        }
        E::Incomplete | E::Payload(_) => ApiError::UploadIncomplete,
        _ => ApiError::InvalidMultipart("the body is not well-formed multipart/form-data"),
    }
}

/// The first part, which must be `category`.
async fn read_category(form: &mut Multipart) -> Result<Category, ApiError> {
    let mut field = match form.next().await {
        Some(Ok(field)) if field.name() == Some("category") => field,
        Some(Ok(_)) | None => {
            return Err(ApiError::InvalidMultipart(
                "the first part must be `category`, then `file`",
            ));
        }
        Some(Err(e)) => return Err(multipart_error(&e)),
    };
    let bytes = match field.bytes(64).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return Err(multipart_error(&e)),
        Err(_) => Bytes::new(),
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(ApiError::InvalidField {
            field: "category",
            reason: "must be insurance_card_front, insurance_card_back, photo_id, referral, \
                     lab_result or other"
                .into(),
        })
}

/// The optional `confidentiality` and `sensitivity` parts, in that order, then the `file` part.
async fn read_label(form: &mut Multipart) -> Result<(Label, actix_multipart::Field), ApiError> {
    let mut confidentiality = None;
    let mut sensitivity = None;
    loop {
        let mut field = match form.next().await {
            Some(Ok(field)) => field,
            Some(Err(e)) => return Err(multipart_error(&e)),
            None => return Err(ApiError::InvalidMultipart("a `file` part is required")),
        };
        let (name, slot) = match field.name() {
            Some("file") => {
                let codes: Vec<String> = sensitivity
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect();
                let label = Label::parse(confidentiality.as_deref(), &codes)?;
                return Ok((label, field));
            }
            Some("confidentiality") if confidentiality.is_none() && sensitivity.is_none() => {
                ("confidentiality", &mut confidentiality)
            }
            Some("sensitivity") if sensitivity.is_none() => ("sensitivity", &mut sensitivity),
            _ => {
                return Err(ApiError::InvalidMultipart(
                    "after `category` come `confidentiality` and `sensitivity` (optional, in that order), then `file`",
                ));
            }
        };
        let bytes = match field.bytes(256).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Err(multipart_error(&e)),
            Err(_) => {
                return Err(ApiError::InvalidField {
                    field: name,
                    reason: "is too long".into(),
                });
            }
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::InvalidField {
            field: name,
            reason: "must be text".into(),
        })?;
        *slot = Some(text.trim().to_owned());
    }
}

/// The last path segment of a client's file name, without control characters; `None` if
/// nothing is left.
fn base_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    let clean = clean.trim();
    (!clean.is_empty() && clean != "." && clean != "..").then(|| clean.to_owned())
}

/// A patient's documents, oldest first.
#[utoipa::path(
    get,
    path = "/api/patients/{id}/files",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The patient's live (not deleted) documents", body = [FileView]),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `file:read` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    patient: ReachablePatientId,
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    let files = state.files.list(patient.0).await?;
    let ids: Vec<Uuid> = files.iter().map(|f| f.id).collect();
    // A file the caller's label rights do not reach shows its id and label only.
    let view: Vec<FileView> = files
        .iter()
        .map(|f| {
            if super::readable(&state, &grants, patient.reach(), &label_of(&f.label)) {
                FileView::from(f)
            } else {
                FileView::withheld(f)
            }
        })
        .collect();
    let mut response = HttpResponse::Ok().json(view);
    AuditNote {
        patient_id: Some(patient.0),
        metadata: Some(serde_json::json!({
            "access": patient.reach().as_str(),
            "returned": ids.len(),
            "ids": ids,
        })),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Downloads a document, decrypting as it streams.
#[utoipa::path(
    get,
    path = "/api/files/{id}",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "File id")),
    responses(
        (status = 200, description = "The document as an attachment, with its type, `Content-Length` and `Repr-Digest` (SHA-256 of the bytes sent), and the download stamp headers (`Clinicd-Download-Id`, `-Downloaded-By`, `-Downloaded-At`, `-Notice`). A PDF is stamped: every page shows who downloaded it, when, the request id, the download id and \"confidential: contains PHI\", and its document information holds `ClinicdDownloadId`; the stamp is an incremental update appended to the stored bytes, which come first unchanged. Only authenticated bytes are sent; if the stored object fails verification after the response has started, the connection is closed before `Content-Length` bytes arrive (the event is audited), so a client must treat a short body as a failure", content((FileBytes = "application/pdf"), (FileBytes = "image/png"), (FileBytes = "image/jpeg"), (FileBytes = "image/tiff"), (FileBytes = "text/plain; charset=utf-8"))),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `file:read` (permission_denied), or a label that withholds the file from the caller (restricted_content, naming the label)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file, deleted, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient's keys were destroyed (data_destroyed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A PDF that cannot carry the download stamp (damaged or password-protected) is not released (pdf_unstampable); audited", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or over the daily export limit (export_limit)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The stored object failed verification before anything was sent (file_integrity_failed); audited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The file store is unavailable (storage_unavailable)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download(
    state: web::Data<ApiState>,
    file: ReachableFile,
    Granted(grants): Granted,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    super::guard(&state, &grants, file.reach(), &label_of(&file.label))?;
    crate::rate_limit::take_export(&state, &grants, file.patient_id).await?;
    let info = state.files.info(&file).await?;
    // Who took this copy and when, on the copy itself (docs/lifecycle.md): a forensic id that
    // ties a file found elsewhere to this audit event.
    let stamp = super::DownloadStamp::new(&file.caller().username);
    let is_pdf = info.content_type == clinicd_files::ContentType::Pdf;
    let note = AuditNote {
        patient_id: Some(file.patient_id),
        resource_id: Some(file.id.to_string()),
        metadata: Some(
            serde_json::json!({ "access": file.reach().as_str(), "size": info.size,
            "download_id": stamp.id, "watermarked": is_pdf }),
        ),
        ..AuditNote::default()
    };
    let alarm = IntegrityAlarm {
        db: state.db.clone(),
        failure: FileIntegrityFailure {
            file: file.id,
            user: file.user().0,
            session: file.caller().session_id,
            client: client_info(&req),
        },
        now: Utc::now(),
    };
    // A PDF carries the stamp on every page too; one that cannot is not released.
    let watermark = if is_pdf {
        match super::pdf_stamp::prepare(&state, &file, info.size, &stamp).await {
            Ok(watermark) => Some(watermark),
            Err(Refusal::File(e)) => return Ok(refuse(e, alarm, note).await),
            Err(Refusal::Unstampable) => {
                let mut response = ApiError::PdfUnstampable.error_response();
                note.attach(&mut response);
                return Ok(response);
            }
        }
    } else {
        None
    };
    let (size, sha256) = match &watermark {
        Some(w) => (info.size + w.appended.len() as u64, w.sha256),
        None => (info.size, info.sha256),
    };
    if let Some(w) = watermark.as_ref().filter(|w| w.whole) {
        // A rewritten document goes from memory, whole.
        let mut response = HttpResponse::Ok()
            .content_type(info.content_type.mime())
            .insert_header((header::CONTENT_DISPOSITION, disposition(&info)))
            .insert_header(("Repr-Digest", super::repr_digest(&sha256)))
            .body(w.appended.clone());
        stamp.mark(response.headers_mut());
        note.attach(&mut response);
        return Ok(response);
    }
    let mut download = state.files.open(&file).await?;
    // The header and first segment are verified before the response starts, so a swapped,
    // truncated-to-nothing or re-keyed object is a clean error rather than a cut connection.
    let first = match download.next().await {
        None => Bytes::new(),
        Some(Ok(plain)) => Bytes::from(plain),
        Some(Err(e)) => return Ok(refuse(e, alarm, note).await),
    };
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(remaining(download, alarm))
        .chain(futures_util::stream::iter(
            watermark.map(|w| Ok::<_, std::io::Error>(w.appended)),
        ));
    let mut response = HttpResponse::Ok()
        .content_type(match info.content_type {
            clinicd_files::ContentType::Text => "text/plain; charset=utf-8",
            other => other.mime(),
        })
        .insert_header((header::CONTENT_DISPOSITION, disposition(&info)))
        .insert_header(("Repr-Digest", super::repr_digest(&sha256)))
        .body(SizedStream::new(size, body));
    stamp.mark(response.headers_mut());
    note.attach(&mut response);
    Ok(response)
}

/// The rest of a download; a failure ends the stream with an error (the connection is closed
/// short of `Content-Length`) and raises the alarm.
fn remaining(
    download: Download,
    alarm: IntegrityAlarm,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(
        (Some(download), Some(alarm)),
        |(mut download, mut alarm)| async move {
            let piece = download.as_mut()?.next().await?;
            match piece {
                Ok(plain) => Some((Ok(Bytes::from(plain)), (download, alarm))),
                Err(e) => {
                    if let Some(alarm) = alarm.take() {
                        alarm.raise(&e).await;
                    }
                    Some((Err(std::io::Error::other("file integrity")), (None, None)))
                }
            }
        },
    )
}

/// A failure before any byte was sent: a problem response that keeps the audit note.
async fn refuse(error: FileError, alarm: IntegrityAlarm, note: AuditNote) -> HttpResponse {
    if matches!(error, FileError::Integrity(_) | FileError::ObjectMissing) {
        alarm.raise(&error).await;
    }
    let mut response = ApiError::from(error).error_response();
    note.attach(&mut response);
    response
}

/// Raises the security event of a failed verification (identity owns security events).
#[derive(Debug)]
struct IntegrityAlarm {
    db: sqlx::PgPool,
    failure: FileIntegrityFailure,
    now: chrono::DateTime<Utc>,
}

impl IntegrityAlarm {
    async fn raise(self, error: &FileError) {
        tracing::error!(file = %self.failure.file, error = %error, "a stored file failed verification");
        security_events::file_integrity_failure(&self.db, self.failure, self.now).await;
    }
}

/// `attachment`, with a file name safe in a header: the original name's ASCII letters, digits
/// and `._-` kept, everything else `_`; `file-<id>.<ext>` if there is none.
fn disposition(info: &FileInfo) -> String {
    let name = info
        .name
        .as_deref()
        .map(|n| {
            n.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .unwrap_or_else(|| format!("file-{}.{}", info.id, info.content_type.extension()));
    format!("attachment; filename=\"{name}\"")
}

/// Deletes a document (soft: kept, unreadable through the API, until its retention ends).
#[utoipa::path(
    delete,
    path = "/api/files/{id}",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "File id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `file:upload` (permission_denied), or a label that withholds the file from the caller (restricted_content)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file, already deleted, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    state: web::Data<ApiState>,
    audit: Audit,
    file: ReachableFile,
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    super::guard(&state, &grants, file.reach(), &label_of(&file.label))?;
    let mut tx = audit.begin().await?;
    let deleted = state
        .files
        .delete(&mut tx, file.id, file.user().0, state.rbac.now())
        .await?;
    if !deleted {
        return Err(ApiError::NotFound);
    }
    let note = AuditNote {
        patient_id: Some(file.patient_id),
        resource_id: Some(file.id.to_string()),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::NO_CONTENT, note).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Changes a file's label, with a reason. The caller must be able to read the file under both
/// labels.
#[utoipa::path(
    put,
    path = "/api/files/{id}/label",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "File id")),
    request_body = crate::routes::records::notes::LabelRequest,
    responses(
        (status = 200, description = "The file with its new label", body = FileView),
        (status = 400, description = "A malformed id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `file:upload`, or a label the caller could not read (restricted_content)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file, deleted, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad code or reason (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn relabel(
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<crate::routes::records::notes::LabelRequest>,
    file: ReachableFile,
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    let label = Label::parse(Some(&body.confidentiality), &body.sensitivity)?;
    let reason = crate::routes::reason_text("reason", &body.reason)?;
    let before = label_of(&file.label);
    super::guard(&state, &grants, file.reach(), &before)?;
    super::guard(&state, &grants, file.reach(), &label)?;
    let mut tx = audit.begin().await?;
    if !state
        .files
        .relabel(&mut tx, file.id, &stored(&label))
        .await?
    {
        return Err(ApiError::NotFound);
    }
    let note = super::relabel_note(file.patient_id, file.id, &before, &label, reason);
    audit.commit(tx, StatusCode::OK, note).await?;
    let mut info = state.files.info(&file).await?;
    info.label = stored(&label);
    Ok(HttpResponse::Ok().json(FileView::from(&info)))
}

/// The upload form reader as `upload` runs it up to storing (category, label, the file's bytes,
/// then nothing but the closing boundary), on a body in the given chunks with boundary
/// [`FUZZ_BOUNDARY`]: the size of the file read, or the problem `upload` would answer. The
/// multipart fuzz target (fuzz/) and its property-test twin (below) drive it.
#[doc(hidden)]
pub fn read_upload_form(chunks: Vec<Vec<u8>>) -> Result<usize, ApiError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(ApiError::unexpected)?;
    runtime.block_on(read_form(chunks))
}

#[doc(hidden)]
pub const FUZZ_BOUNDARY: &str = "twinboundary";

async fn read_form(chunks: Vec<Vec<u8>>) -> Result<usize, ApiError> {
    let mut headers = header::HeaderMap::new();
    let value = format!("multipart/form-data; boundary={FUZZ_BOUNDARY}");
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_str(&value).map_err(ApiError::unexpected)?,
    );
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, actix_web::error::PayloadError>(Bytes::from(c))),
    );
    // Short: nothing here waits on a client, only on the parser.
    let idle = std::time::Duration::from_millis(50);
    let mut form = Multipart::new(&headers, stream);
    within(idle, read_category(&mut form)).await??;
    let (_label, mut file) = within(idle, read_label(&mut form)).await??;
    let _ = file
        .content_disposition()
        .and_then(|d| d.get_filename())
        .and_then(base_name);
    let mut size = 0;
    let mut bytes = with_idle_timeout(&mut file, idle);
    while let Some(chunk) = bytes.next().await {
        size += chunk.map_err(|_| ApiError::UploadIncomplete)?.len();
    }
    drop(bytes);
    drop(file);
    match within(idle, form.next()).await? {
        None => Ok(size),
        Some(Ok(_)) => Err(ApiError::InvalidMultipart("an extra part")),
        Some(Err(e)) => Err(multipart_error(&e)),
    }
}

// The property-test twin of the multipart fuzz target (docs/assurance.md): any body, raw or
// shaped like a form with parts in any order, names, contents and cuts, read the way `upload`
// reads it, gives an answer or a 4xx problem, never a panic, a hang or a 5xx.
#[cfg(test)]
mod twin {
    use proptest::prelude::*;

    use super::*;

    const BOUNDARY: &str = FUZZ_BOUNDARY;

    fn part(name: &str, filename: Option<&str>, content: &[u8]) -> Vec<u8> {
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        let mut out =
            format!("--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").into_bytes();
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        out
    }

    fn form(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut body = parts.concat();
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    /// Splits `body` at the given points: the parser must not care where chunks end.
    fn chunked(body: Vec<u8>, cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks = Vec::new();
        let mut start = 0;
        for point in points.into_iter().chain([body.len()]) {
            chunks.push(body.get(start..point).unwrap_or_default().to_vec());
            start = point;
        }
        chunks
    }

    fn is_refusal(answer: &Result<usize, ApiError>) -> bool {
        match answer {
            Ok(_) => true,
            Err(e) => e.status_code().is_client_error(),
        }
    }

    fn content() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            Just(b"other".to_vec()),
            Just(b"restricted".to_vec()),
            Just(b"HIV,PSY".to_vec()),
            Just(format!("x\r\n--{BOUNDARY}").into_bytes()),
            Just(b"ends with a CR\r".to_vec()),
        ]
    }

    fn any_part() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just("category".to_owned()),
            Just("confidentiality".to_owned()),
            Just("sensitivity".to_owned()),
            Just("file".to_owned()),
            "[ -~]{0,12}",
        ];
        let filename = proptest::option::of(prop_oneof![
            Just("../../etc/passwd".to_owned()),
            Just("..".to_owned()),
            Just("a\u{0}b\r\n.pdf".to_owned()),
            "\\PC{0,300}",
        ]);
        (name, filename, content()).prop_map(|(n, f, c)| part(&n, f.as_deref(), &c))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_are_an_answer_or_a_4xx(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            prop_assert!(is_refusal(&read_upload_form(chunked(body, &cuts))));
        }

        #[test]
        fn any_parts_in_any_order_cut_anywhere_are_an_answer_or_a_4xx(
            parts in proptest::collection::vec(any_part(), 0..6),
            keep in any::<prop::sample::Index>(),
            cut in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut body = form(&parts);
            if cut {
                body.truncate(keep.index(body.len() + 1));
            }
            prop_assert!(is_refusal(&read_upload_form(chunked(body, &cuts))));
        }

        #[test]
        fn a_well_formed_form_is_read_whole_however_it_is_chunked(
            file in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            // Content ending in CR is the case the parser cannot see the end of (above).
            prop_assume!(file.last() != Some(&b'\r'));
            prop_assume!(!file.windows(BOUNDARY.len()).any(|w| w == BOUNDARY.as_bytes()));
            let body = form(&[part("category", None, b"other"), part("file", Some("a.pdf"), &file)]);
            prop_assert_eq!(read_upload_form(chunked(body, &cuts)).ok(), Some(file.len()));
        }

        #[test]
        fn a_file_name_is_a_clean_base_name_or_none(raw in "\\PC{0,400}|[./\\\\a\\u{0}\\r\\n]{0,12}") {
            if let Some(name) = base_name(&raw) {
                prop_assert!(!name.contains(['/', '\\']) && !name.chars().any(char::is_control));
                prop_assert!(name != "." && name != ".." && !name.is_empty());
                prop_assert!(name.chars().count() <= MAX_NAME_CHARS);
            }
        }
    }
}
