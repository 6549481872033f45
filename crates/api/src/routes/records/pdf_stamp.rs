//! The watermark on a downloaded PDF (docs/lifecycle.md): every page shows who took the copy,
//! when, the request id and that it holds PHI, and the document information carries the
//! forensic download id of the audit event.
//!
//! The stamp is an incremental update appended to the original bytes, so a download reads the
//! plaintext twice: once into memory to build the update (the parser needs the whole document),
//! and again, streamed and verified segment by segment, to send it followed by the update.
//! Memory is bounded: at most [`AT_ONCE`] documents are held per instance, each for the time the
//! update takes to build (measured at 2.0 times the file's size for a 50 MiB PDF,
//! `./scripts/bench pdf`), and nothing of the document is held while it is sent. A PDF whose
//! cross-reference data is damaged is the exception: it is rewritten clean, and the whole
//! stamped copy is sent from memory.

use actix_web::web::Bytes;
use aws_lc_rs::digest;
use clinicd_files::FileError;
use tokio::sync::Semaphore;

use super::DownloadStamp;
use crate::extract::ReachableFile;
use crate::state::ApiState;

/// PDFs stamped at once by one instance; more wait their turn.
const AT_ONCE: usize = 2;
static STAMPING: Semaphore = Semaphore::const_new(AT_ONCE);

/// What to send, and the SHA-256 of the whole stamped copy.
pub(super) struct Watermark {
    /// The update to send after the original bytes or, when `whole`, the whole stamped copy.
    pub appended: Bytes,
    /// The original's cross-reference data was damaged, so it was rewritten clean: `appended`
    /// is the whole document and the stored bytes are not sent again.
    pub whole: bool,
    pub sha256: [u8; 32],
}

pub(super) enum Refusal {
    /// Reading the stored object failed (as any download can).
    File(FileError),
    /// The PDF cannot carry the stamp (damaged, password-protected, no pages): it is not
    /// released unstamped.
    Unstampable,
}

/// Reads the document once and builds its stamp.
pub(super) async fn prepare(
    state: &ApiState,
    file: &ReachableFile,
    size: u64,
    stamp: &DownloadStamp,
) -> Result<Watermark, Refusal> {
    let line = stamp.line();
    let download_id = stamp.id.to_string();
    let _turn = STAMPING.acquire().await.map_err(|_| Refusal::Unstampable)?;
    let mut download = state.files.open(file).await.map_err(Refusal::File)?;
    let mut plain = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(piece) = download.next().await {
        plain.extend_from_slice(&piece.map_err(Refusal::File)?);
    }
    let mut sha256 = digest::Context::new(&digest::SHA256);
    sha256.update(&plain);
    let stamped = tokio::task::spawn_blocking(move || {
        clinicd_watermark::stamp(plain, &clinicd_watermark::Stamp { line, download_id })
    })
    .await;
    let (appended, whole) = match stamped {
        Ok(Ok(clinicd_watermark::Stamped::Appended(appended))) => (appended, false),
        // The whole document was rewritten: its digest is of it alone.
        Ok(Ok(clinicd_watermark::Stamped::Rewritten(document))) => {
            sha256 = digest::Context::new(&digest::SHA256);
            (document, true)
        }
        Ok(Err(error)) => {
            tracing::warn!(file = %file.id, error = %error, "a PDF could not be stamped and was not released");
            return Err(Refusal::Unstampable);
        }
        Err(_) => return Err(Refusal::Unstampable),
    };
    sha256.update(&appended);
    let sha256 = sha256
        .finish()
        .as_ref()
        .try_into()
        .map_err(|_| Refusal::Unstampable)?;
    Ok(Watermark {
        appended: Bytes::from(appended),
        whole,
        sha256,
    })
}
