//! Stamps a downloaded PDF: a visible line on every page (who took the copy, when, the request
//! id, that it holds PHI) drawn through one form XObject in a standard font, and the forensic
//! download id in the document information.
//!
//! The stamp is an incremental update (ISO 32000-1, 7.5.6): the original bytes stay as they are
//! and the changed objects, a cross-reference section and a trailer are appended. So a caller
//! can send the original (streamed again from storage) followed by [`stamp_update`]'s bytes,
//! and never needs a second full copy of the document in memory.

use lopdf::{
    Dictionary, Document, IncrementalDocument, LoadOptions, Object, ObjectId, Stream, dictionary,
};

/// What the stamp says.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The visible line, drawn on every page. Printable ASCII is kept; anything else becomes `?`
    /// (the standard fonts have no glyphs beyond WinAnsi, and a name is never worth a crash).
    pub line: String,
    /// The forensic id tied to the audit event, written as `ClinicdDownloadId` in the document
    /// information dictionary.
    pub download_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    #[error("the PDF could not be read")]
    Unreadable,
    #[error("the PDF is encrypted with a password")]
    Encrypted,
    #[error("the PDF has no pages")]
    NoPages,
    #[error("the stamp could not be written")]
    Write,
}

/// Largest size a single compressed object or cross-reference stream may inflate to while the
/// document loads: real ones are kilobytes, and a crafted one must not take the server's memory.
const MAX_INFLATED: usize = 32 * 1024 * 1024;

/// Font size and margins of the visible line, in PDF points.
const FONT_SIZE: f32 = 7.0;
const MARGIN: f32 = 14.0;

/// A stamped PDF.
#[derive(Debug)]
pub enum Stamped {
    /// The bytes to send after the original, unchanged ones.
    Appended(Vec<u8>),
    /// The whole stamped document: the original's cross-reference data was damaged (a reader
    /// rebuilt it by scanning), so it was rewritten clean first and an update appended to that.
    Rewritten(Vec<u8>),
}

fn load(pdf: &[u8]) -> Result<Document, WatermarkError> {
    let options = LoadOptions {
        max_decompressed_size: Some(MAX_INFLATED),
        ..LoadOptions::default()
    };
    let doc =
        Document::load_mem_with_options(pdf, options).map_err(|_| WatermarkError::Unreadable)?;
    if doc.is_encrypted() {
        return Err(WatermarkError::Encrypted);
    }
    Ok(doc)
}

/// Stamps `pdf`: an update appended to it when its cross-reference data is sound (the usual
/// case, and the one whose memory is bounded at about twice the file), else a clean rewrite
/// with the update appended (a damaged file costs about twice that).
pub fn stamp(pdf: Vec<u8>, stamp: &Stamp) -> Result<Stamped, WatermarkError> {
    let doc = load(&pdf)?;
    // A document whose cross-reference data had to be rebuilt by scanning has no section an
    // update could point back to: appending to it would make a file readers disagree about.
    if doc.xref_start != 0 && doc.xref_recovery.is_none() {
        return Ok(Stamped::Appended(update_for(pdf, doc, stamp)?));
    }
    drop(pdf);
    let mut doc = doc;
    let mut clean = Vec::new();
    doc.save_to(&mut clean).map_err(|_| WatermarkError::Write)?;
    drop(doc);
    let reloaded = load(&clean)?;
    if reloaded.xref_start == 0 || reloaded.xref_recovery.is_some() {
        return Err(WatermarkError::Unreadable);
    }
    let appended = update_for(clean.clone(), reloaded, stamp)?;
    clean.extend_from_slice(&appended);
    Ok(Stamped::Rewritten(clean))
}

/// The bytes to append to `pdf` so that every page carries `stamp` (`Stamped::Appended`'s),
/// for a PDF with sound cross-reference data (else an error).
pub fn stamp_update(pdf: Vec<u8>, stamp: &Stamp) -> Result<Vec<u8>, WatermarkError> {
    let doc = load(&pdf)?;
    if doc.xref_start == 0 || doc.xref_recovery.is_some() {
        return Err(WatermarkError::Unreadable);
    }
    update_for(pdf, doc, stamp)
}

/// The update for `pdf` (parsed as `doc`). `pdf` is consumed: the parser keeps it while the
/// update is built, and it is dropped before this returns.
fn update_for(pdf: Vec<u8>, doc: Document, stamp: &Stamp) -> Result<Vec<u8>, WatermarkError> {
    let original_len = pdf.len();
    let pages: Vec<ObjectId> = doc.get_pages().into_values().collect();
    if pages.is_empty() {
        return Err(WatermarkError::NoPages);
    }
    let mut update = IncrementalDocument::create_from(pdf, doc);
    let name = format!("ClinicdStamp{}", short_id(&stamp.download_id));
    let form = add_form(&mut update.new_document, &visible(&stamp.line));
    let open = update
        .new_document
        .add_object(Stream::new(Dictionary::new(), b"q\n".to_vec()));
    for page in pages {
        stamp_page(&mut update, page, &name, form, open)?;
    }
    set_download_id(&mut update, &stamp.download_id)?;
    let mut appended = SkipPrefix {
        skip: original_len,
        kept: Vec::new(),
    };
    update
        .save_to(&mut appended)
        .map_err(|_| WatermarkError::Write)?;
    Ok(appended.kept)
}

/// The visible line: printable ASCII, anything else `?`.
fn visible(line: &str) -> String {
    line.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// Eight characters of the download id, so the XObject's name differs from any stamp an earlier
/// download left in a file that was uploaded again.
fn short_id(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect()
}

/// One form XObject holding the line in Helvetica (a standard font every reader has, so nothing
/// is embedded), drawn by every page.
fn add_form(doc: &mut Document, line: &str) -> ObjectId {
    let font = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let mut content = format!("BT /F1 {FONT_SIZE} Tf 0.7 0 0 rg 0 2 Td (").into_bytes();
    // Every parenthesis escaped, not only unbalanced ones: a reader never has to guess.
    for byte in line.bytes() {
        if matches!(byte, b'(' | b')' | b'\\') {
            content.push(b'\\');
        }
        content.push(byte);
    }
    content.push(b')');
    content.extend_from_slice(b" Tj ET\n");
    let width = line.len() as f32 * FONT_SIZE * 0.6 + 4.0;
    doc.add_object(Stream::new(
        dictionary! {
            "Type" => "XObject",
            "Subtype" => "Form",
            "BBox" => vec![0.into(), 0.into(), Object::Real(width), Object::Real(FONT_SIZE + 4.0)],
            "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
        },
        content,
    ))
}

/// Wraps the page's own content in `q … Q` (so whatever state it leaves does not move the stamp)
/// and draws the form at the bottom left of its media box.
fn stamp_page(
    update: &mut IncrementalDocument,
    page: ObjectId,
    name: &str,
    form: ObjectId,
    open: ObjectId,
) -> Result<(), WatermarkError> {
    let prev = update.get_prev_documents();
    let [x0, y0] = media_origin(prev, page);
    let existing = contents(prev, page);
    update
        .add_xobject(page, name.as_bytes().to_vec(), form)
        .map_err(|_| WatermarkError::Unreadable)?;
    let close = update.new_document.add_object(Stream::new(
        Dictionary::new(),
        format!(
            "\nQ q 1 0 0 1 {} {} cm /{name} Do Q\n",
            x0 + MARGIN,
            y0 + MARGIN / 2.0
        )
        .into_bytes(),
    ));
    let mut all = Vec::with_capacity(existing.len() + 2);
    all.push(Object::Reference(open));
    all.extend(existing);
    all.push(Object::Reference(close));
    update
        .new_document
        .get_dictionary_mut(page)
        .map_err(|_| WatermarkError::Unreadable)?
        .set("Contents", Object::Array(all));
    Ok(())
}

/// The page's content streams as references (a page may have one, an array, a reference to an
/// array, or none).
fn contents(doc: &Document, page: ObjectId) -> Vec<Object> {
    let Ok(dict) = doc.get_dictionary(page) else {
        return Vec::new();
    };
    match dict.get(b"Contents") {
        Ok(Object::Reference(id)) => match doc.get_object(*id) {
            Ok(Object::Array(items)) => items.clone(),
            _ => vec![Object::Reference(*id)],
        },
        Ok(Object::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// The lower left corner of the page's media box, which may be inherited from the page tree
/// (US Letter's origin if none is found, as readers assume).
fn media_origin(doc: &Document, page: ObjectId) -> [f32; 2] {
    let mut node = doc.get_dictionary(page).ok();
    // The page tree is shallow; the bound stops a crafted cycle of parents.
    for _ in 0..32 {
        let Some(dict) = node else { break };
        if let Ok(boxed) = dict.get(b"MediaBox") {
            let corners = doc
                .dereference(boxed)
                .ok()
                .and_then(|(_, o)| o.as_array().ok());
            if let Some(corners) = corners {
                let number = |i: usize| {
                    corners
                        .get(i)
                        .and_then(|o| o.as_float().ok())
                        .unwrap_or(0.0)
                };
                return [number(0), number(1)];
            }
        }
        node = dict
            .get(b"Parent")
            .and_then(Object::as_reference)
            .and_then(|id| doc.get_dictionary(id))
            .ok();
    }
    [0.0, 0.0]
}

/// Puts the download id in the document information dictionary (a copy of the existing one in
/// the update, or a new one).
fn set_download_id(update: &mut IncrementalDocument, id: &str) -> Result<(), WatermarkError> {
    let id = Object::string_literal(id.as_bytes().to_vec());
    let notice = Object::string_literal(b"confidential: contains PHI".to_vec());
    let info = update.new_document.trailer.get(b"Info").ok().cloned();
    match info {
        Some(Object::Reference(info_id))
            if update.get_prev_documents().get_dictionary(info_id).is_ok() =>
        {
            update
                .opt_clone_object_to_new_document(info_id)
                .map_err(|_| WatermarkError::Unreadable)?;
            let dict = update
                .new_document
                .get_dictionary_mut(info_id)
                .map_err(|_| WatermarkError::Unreadable)?;
            dict.set("ClinicdDownloadId", id);
            dict.set("ClinicdNotice", notice);
        }
        Some(Object::Dictionary(mut dict)) => {
            dict.set("ClinicdDownloadId", id);
            dict.set("ClinicdNotice", notice);
            update
                .new_document
                .trailer
                .set("Info", Object::Dictionary(dict));
        }
        _ => {
            let info_id = update.new_document.add_object(dictionary! {
                "ClinicdDownloadId" => id,
                "ClinicdNotice" => notice,
            });
            update
                .new_document
                .trailer
                .set("Info", Object::Reference(info_id));
        }
    }
    Ok(())
}

/// A writer that drops the first `skip` bytes: the update writer repeats the original document
/// before its own section (and counts it for the offsets), which the caller already has.
struct SkipPrefix {
    skip: usize,
    kept: Vec<u8>,
}

impl std::io::Write for SkipPrefix {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let dropped = self.skip.min(buf.len());
        self.skip -= dropped;
        self.kept
            .extend_from_slice(buf.get(dropped..).unwrap_or_default());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
