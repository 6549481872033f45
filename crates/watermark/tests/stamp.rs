//! Stamped PDFs parse back, carry the stamp on every page and the download id in their
//! information, and keep every original byte in front of the update.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a panic is the report"
)]

use clinicd_watermark::{Stamp, Stamped, WatermarkError, stamp_update};
use lopdf::xref::XrefType;
use lopdf::{Document, Object, ObjectId, Stream, dictionary};
use proptest::prelude::*;

const LINE: &str =
    "Downloaded by dr.grey at 2026-12-03T10:00:00Z - request r-1 (x) - confidential: contains PHI";

fn stamp() -> Stamp {
    Stamp {
        line: LINE.to_owned(),
        download_id: "0193a4b2-7c1d-7e00-8000-000000000001".to_owned(),
    }
}

/// A document of `pages` pages, the media box on the page tree (inherited), each page's content
/// a single stream or an array of two, with the given cross-reference type.
fn sample(pages: usize, xref: XrefType, with_info: bool) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    doc.reference_table.cross_reference_type = xref;
    let tree = doc.new_object_id();
    let font = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier",
    });
    let mut kids = Vec::new();
    for i in 0..pages {
        let body = format!("BT /F1 12 Tf 72 700 Td (page {i}) Tj ET 2 0 0 2 0 0 cm").into_bytes();
        let first = doc.add_object(Stream::new(dictionary! {}, body));
        let contents = if i % 2 == 0 {
            Object::Reference(first)
        } else {
            let second = doc.add_object(Stream::new(dictionary! {}, b"0 0 m 10 10 l S".to_vec()));
            Object::Array(vec![first.into(), second.into()])
        };
        let page = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => tree,
            "Contents" => contents,
            "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
        });
        kids.push(Object::Reference(page));
    }
    doc.objects.insert(
        tree,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Count" => pages as i64,
            "Kids" => kids,
            "MediaBox" => vec![10.into(), 20.into(), 595.into(), 842.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => tree });
    doc.trailer.set("Root", catalog);
    if with_info {
        let info = doc.add_object(dictionary! { "Title" => Object::string_literal("Referral") });
        doc.trailer.set("Info", info);
    }
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

fn stamped(original: &[u8]) -> Vec<u8> {
    let appended = stamp_update(original.to_vec(), &stamp()).unwrap();
    let mut whole = original.to_vec();
    whole.extend_from_slice(&appended);
    whole
}

/// Every page draws our form, whose content shows the line; the information carries the id.
fn assert_stamped(whole: &[u8], pages: usize, title: Option<&str>) {
    let doc = Document::load_mem(whole).expect("the stamped file parses");
    let page_ids: Vec<ObjectId> = doc.get_pages().into_values().collect();
    assert_eq!(page_ids.len(), pages);
    for (n, page) in page_ids.iter().enumerate() {
        let content = String::from_utf8_lossy(&doc.get_page_content(*page)).into_owned();
        assert!(content.starts_with("q\n"), "page {n}: {content}");
        assert!(
            content.contains(&format!("(page {n})")),
            "page {n} kept its text"
        );
        let name = content
            .split('/')
            .find_map(|part| part.strip_prefix("ClinicdStamp"))
            .and_then(|rest| rest.split(' ').next())
            .map(|id| format!("ClinicdStamp{id}"))
            .unwrap_or_else(|| panic!("page {n} draws no stamp: {content}"));
        assert!(
            content.trim_end().ends_with(&format!("/{name} Do Q")),
            "page {n}: {content}"
        );
        // The name resolves through the page's resources to our form.
        let resources = doc.get_page_resources(*page).unwrap();
        let dict = resources
            .0
            .cloned()
            .or_else(|| {
                resources
                    .1
                    .first()
                    .and_then(|id| doc.get_dictionary(*id).ok().cloned())
            })
            .unwrap();
        let xobjects = dict.get(b"XObject").unwrap().as_dict().unwrap();
        let form_id = xobjects
            .get(name.as_bytes())
            .unwrap()
            .as_reference()
            .unwrap();
        let form = doc.get_object(form_id).unwrap().as_stream().unwrap();
        assert_eq!(
            form.dict.get(b"Subtype").unwrap().as_name().unwrap(),
            b"Form"
        );
        let drawn = String::from_utf8_lossy(&form.content);
        assert!(drawn.contains("confidential: contains PHI"), "{drawn}");
        assert!(drawn.contains("dr.grey"), "{drawn}");
        assert!(
            drawn.contains("\\(x\\)"),
            "parentheses are escaped: {drawn}"
        );
        // The page's own font is still there beside the stamp.
        assert!(dict.get(b"Font").is_ok(), "page {n} lost its fonts");
    }
    let info_id = doc.trailer.get(b"Info").unwrap().as_reference().unwrap();
    let info = doc.get_dictionary(info_id).unwrap();
    assert_eq!(
        info.get(b"ClinicdDownloadId").unwrap().as_str().unwrap(),
        stamp().download_id.as_bytes()
    );
    if let Some(title) = title {
        assert_eq!(
            info.get(b"Title").unwrap().as_str().unwrap(),
            title.as_bytes()
        );
    }
}

#[test]
fn every_page_of_a_classic_xref_pdf_is_stamped_and_it_parses_back() {
    let original = sample(3, XrefType::CrossReferenceTable, true);
    let whole = stamped(&original);
    assert!(
        whole.starts_with(&original),
        "the original bytes come first, unchanged"
    );
    assert_stamped(&whole, 3, Some("Referral"));
}

#[test]
fn a_pdf_with_cross_reference_streams_and_no_information_is_stamped() {
    let original = sample(4, XrefType::CrossReferenceStream, false);
    assert_stamped(&stamped(&original), 4, None);
}

#[test]
fn a_stamped_copy_can_be_stamped_again_and_shows_both() {
    let once = stamped(&sample(2, XrefType::CrossReferenceTable, true));
    let again = Stamp {
        download_id: "0193a4b2-ffff-7e00-8000-000000000002".to_owned(),
        ..stamp()
    };
    let mut twice = once.clone();
    twice.extend(stamp_update(once, &again).unwrap());
    let doc = Document::load_mem(&twice).unwrap();
    for page in doc.get_pages().into_values() {
        let content = String::from_utf8_lossy(&doc.get_page_content(page)).into_owned();
        assert_eq!(content.matches(" Do Q").count(), 2, "{content}");
    }
}

#[test]
fn what_is_not_a_readable_pdf_is_refused() {
    for junk in [
        b"".to_vec(),
        b"%PDF-1.7\n".to_vec(),
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF".to_vec(),
        vec![0u8; 4096],
    ] {
        assert!(stamp_update(junk, &stamp()).is_err());
    }
}

#[test]
fn a_pdf_without_pages_is_refused() {
    let mut doc = Document::with_version("1.5");
    let tree = doc.add_object(
        dictionary! { "Type" => "Pages", "Count" => 0, "Kids" => Vec::<Object>::new() },
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => tree });
    doc.trailer.set("Root", catalog);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    assert!(matches!(
        stamp_update(bytes, &stamp()),
        Err(WatermarkError::NoPages)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The property-test twin of a fuzz target: whatever the bytes (a real PDF cut or flipped
    /// anywhere, or noise), stamping returns an update or an error, never a panic.
    #[test]
    fn damaged_pdfs_never_panic(cut in 0usize..4000, flip in 0usize..4000, bit in 0u8..8) {
        let mut bytes = sample(2, XrefType::CrossReferenceTable, true);
        if let Some(byte) = bytes.get_mut(flip) {
            *byte ^= 1 << bit;
        }
        bytes.truncate(cut.max(1));
        let _ = stamp_update(bytes, &stamp());
    }

    /// Any visible line (names are not always ASCII) leaves a file that parses with the stamp.
    #[test]
    fn any_line_leaves_a_valid_pdf(line in "\\PC{0,120}") {
        let original = sample(1, XrefType::CrossReferenceTable, true);
        let appended = stamp_update(original.clone(), &Stamp { line, ..stamp() }).unwrap();
        let mut whole = original;
        whole.extend(appended);
        let doc = Document::load_mem(&whole).unwrap();
        prop_assert_eq!(doc.get_pages().len(), 1);
    }
}

/// A PDF written by hand, its cross-reference offsets wrong (readers rebuild them by scanning):
/// stamped as a clean rewrite with the update on it, which parses with the stamp on its page.
#[test]
fn a_pdf_with_a_damaged_cross_reference_table_is_rewritten_then_stamped() {
    let damaged = b"%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >> endobj
4 0 obj << /Length 35 >> stream
BT /F1 12 Tf 72 700 Td (Hi) Tj ET
endstream endobj
xref
0 5
0000000000 65535 f 
0000000010 00000 n 
0000000020 00000 n 
0000000030 00000 n 
0000000040 00000 n 
trailer << /Size 5 /Root 1 0 R >>
startxref
999
%%EOF
"
    .to_vec();
    assert!(stamp_update(damaged.clone(), &stamp()).is_err());
    let Stamped::Rewritten(whole) = clinicd_watermark::stamp(damaged, &stamp()).unwrap() else {
        panic!("a damaged file cannot take an appended update");
    };
    let doc = Document::load_mem(&whole).unwrap();
    assert!(doc.xref_recovery.is_none());
    let pages: Vec<ObjectId> = doc.get_pages().into_values().collect();
    assert_eq!(pages.len(), 1);
    let content = String::from_utf8_lossy(&doc.get_page_content(pages[0])).into_owned();
    assert!(
        content.contains("(Hi)") && content.contains("/ClinicdStamp"),
        "{content}"
    );
}

#[test]
fn a_sound_pdf_gets_an_appended_update() {
    let original = sample(2, XrefType::CrossReferenceTable, true);
    let Stamped::Appended(appended) = clinicd_watermark::stamp(original.clone(), &stamp()).unwrap()
    else {
        panic!("a sound file is stamped by appending");
    };
    assert_eq!(appended, stamp_update(original, &stamp()).unwrap());
}
