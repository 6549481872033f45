//! `clinicd files import DIR --map map.csv`: encrypting a clinic's existing plaintext
//! documents into the file store.
//!
//! The map has a line per document: `path` (relative to DIR), `mrn` (the patient) and
//! `category`. Each file is read twice, streamed both times: once for its digest (which with
//! the patient makes the keyed import key, so a re-run skips what is stored) and once through
//! the encryptor into the store. Nothing is held whole in memory.
//!
//! With `--delete-originals`, an original is removed only after its stored object has been
//! read back, every segment authenticated, and found to have the original's size and SHA-256;
//! a re-run after an interruption finishes the deletions of files imported before.
//!
//! The report has a line per map line (the line number and the outcome, never a path or a
//! patient, which can name people) and a JSON summary.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use aws_lc_rs::digest;
use clinicd_audit::Action;
use clinicd_domain::PatientStore;
use clinicd_files::service::Audited;
use clinicd_files::{Category, FileInfo, Files, NewFile};
use futures_util::Stream;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::cli_audit::CliAudit;

const CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
struct MapRow {
    path: String,
    mrn: String,
    category: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub lines: u64,
    pub imported: u64,
    pub already_imported: u64,
    pub failed: u64,
    pub originals_deleted: u64,
}

/// What happened to one line.
enum Outcome {
    Imported(Uuid, u64),
    AlreadyImported(Uuid),
}

#[derive(Debug)]
pub struct Import<'a> {
    pub files: &'a Files,
    pub patients: &'a PatientStore,
    pub dir: &'a Path,
    pub delete_originals: bool,
    pub audit: &'a CliAudit,
}

impl Import<'_> {
    pub async fn run(&self, map: &Path, report: &mut impl Write) -> anyhow::Result<Summary> {
        let dir = tokio::fs::canonicalize(self.dir).await?;
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(map)?;
        let mut summary = Summary::default();
        for (index, row) in reader.deserialize::<MapRow>().enumerate() {
            // Line 1 is the header.
            let line = index + 2;
            summary.lines += 1;
            let outcome = match row {
                Ok(row) => self.one(&dir, &row).await,
                Err(e) => Err(format!(
                    "not a `path,mrn,category` line ({})",
                    csv_reason(&e)
                )),
            };
            let text = match outcome {
                Ok((outcome, deleted)) => {
                    summary.originals_deleted += u64::from(deleted);
                    let deleted = if deleted { ", original deleted" } else { "" };
                    match outcome {
                        Outcome::Imported(id, size) => {
                            summary.imported += 1;
                            format!("line {line}: imported as file {id} ({size} bytes){deleted}")
                        }
                        Outcome::AlreadyImported(id) => {
                            summary.already_imported += 1;
                            format!("line {line}: already imported as file {id}{deleted}")
                        }
                    }
                }
                Err(reason) => {
                    summary.failed += 1;
                    format!("line {line}: failed: {reason}")
                }
            };
            writeln!(report, "{text}")?;
            report.flush()?;
        }
        Ok(summary)
    }

    /// The audit event of a stored file, as an API upload has (never its name), committed
    /// with the file's row.
    fn audit_upload(&self, info: &FileInfo) -> Audited {
        let metadata = serde_json::json!({
            "via": "import",
            "category": info.category.as_str(),
            "content_type": info.content_type.mime(),
            "size": info.size,
        });
        Audited {
            recorder: self.audit.recorder(Action::Upload, "file"),
            status: None,
            note: self.audit.note(info.id, Some(info.patient_id), metadata),
        }
    }

    /// Imports one file; `true` with it if the original was deleted.
    async fn one(&self, dir: &Path, row: &MapRow) -> Result<(Outcome, bool), String> {
        let path = self.resolve(dir, &row.path).await?;
        let category: Category = row
            .category
            .parse()
            .map_err(|()| "unknown category".to_owned())?;
        let patient = self.patient(&row.mrn).await?;
        let (size, sha256) = digest_of(&path).await?;
        let key = self
            .files
            .import_key(patient, &sha256)
            .await
            .map_err(|e| e.to_string())?;
        let outcome = match self
            .files
            .imported(patient, &sha256)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(id) => Outcome::AlreadyImported(id),
            None => {
                let new = NewFile {
                    patient_id: patient,
                    uploaded_by: None,
                    category,
                    name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    now: chrono::Utc::now(),
                    label: clinicd_files::StoredLabel::default(),
                };
                let staged = self
                    .files
                    .stage(new, chunks(&path).await?)
                    .await
                    .map_err(|e| e.to_string())?;
                let preview = staged.info();
                if preview.sha256 != sha256 {
                    staged.abort().await;
                    return Err("the file changed while it was read".into());
                }
                let stored = staged
                    .commit_import(&key, self.audit_upload(&preview))
                    .await
                    .map_err(|e| e.to_string())?;
                match stored {
                    Some(info) => Outcome::Imported(info.id, info.size),
                    // Stored meanwhile by another run.
                    None => Outcome::AlreadyImported(
                        self.files
                            .imported(patient, &sha256)
                            .await
                            .map_err(|e| e.to_string())?
                            .ok_or("a concurrent import vanished")?,
                    ),
                }
            }
        };
        let deleted = if self.delete_originals {
            let id = match outcome {
                Outcome::Imported(id, _) | Outcome::AlreadyImported(id) => id,
            };
            self.delete_verified(id, &path, (size, sha256)).await?;
            true
        } else {
            false
        };
        Ok((outcome, deleted))
    }

    /// The file under DIR named by a relative path; nothing outside DIR.
    async fn resolve(&self, dir: &Path, relative: &str) -> Result<PathBuf, String> {
        let candidate = Path::new(relative);
        if candidate
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err("the path must be relative to DIR, without `..`".into());
        }
        let path = tokio::fs::canonicalize(dir.join(candidate))
            .await
            .map_err(|e| format!("cannot open the file ({})", e.kind()))?;
        if !path.starts_with(dir) {
            return Err("the path leads outside DIR".into());
        }
        if !tokio::fs::metadata(&path)
            .await
            .map_err(|e| e.kind().to_string())?
            .is_file()
        {
            return Err("not a regular file".into());
        }
        Ok(path)
    }

    async fn patient(&self, mrn: &str) -> Result<Uuid, String> {
        self.patients
            .id_by_mrn(mrn)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no patient has this MRN".to_owned())
    }

    /// Reads the stored file back and removes the original only if they match.
    async fn delete_verified(
        &self,
        id: Uuid,
        path: &Path,
        original: (u64, [u8; 32]),
    ) -> Result<(), String> {
        let stored = self
            .files
            .read_back(id)
            .await
            .map_err(|e| format!("read-back failed, original kept: {e}"))?;
        if stored != original {
            return Err("the stored file does not match the original, original kept".into());
        }
        tokio::fs::remove_file(path).await.map_err(|e| {
            format!(
                "verified, but the original could not be deleted ({})",
                e.kind()
            )
        })
    }
}

fn csv_reason(error: &csv::Error) -> &'static str {
    match error.kind() {
        csv::ErrorKind::Deserialize { .. } => "a column is missing or malformed",
        csv::ErrorKind::UnequalLengths { .. } => "wrong number of columns",
        csv::ErrorKind::Utf8 { .. } => "not UTF-8",
        _ => "unreadable",
    }
}

async fn digest_of(path: &Path) -> Result<(u64, [u8; 32]), String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot open the file ({})", e.kind()))?;
    let mut context = digest::Context::new(&digest::SHA256);
    let mut buffer = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .await
            .map_err(|e| format!("cannot read the file ({})", e.kind()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        context.update(buffer.get(..n).unwrap_or_default());
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(context.finish().as_ref());
    Ok((size, sha256))
}

/// The file as a stream of chunks, for the encryptor.
async fn chunks(
    path: &Path,
) -> Result<impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Unpin, String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot open the file ({})", e.kind()))?;
    Ok(Box::pin(futures_util::stream::try_unfold(
        file,
        |mut file| async move {
            let mut buffer = vec![0u8; CHUNK];
            let n = file.read(&mut buffer).await?;
            if n == 0 {
                return Ok(None);
            }
            buffer.truncate(n);
            Ok(Some((buffer, file)))
        },
    )))
}
