//! Measures the memory a stamp takes: `stamp_memory generate FILE MIB` writes a PDF of about MIB
//! mebibytes (pages of incompressible images, like a scanned referral), and `stamp_memory stamp
//! FILE [OUT]` reads it the way a download does (one buffer of the plaintext), stamps it and prints
//! the peak resident memory against the file's size as one JSON line. Run by
//! `./scripts/bench pdf`; the figure is in docs/lifecycle.md.
#![expect(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a measuring tool"
)]

use std::io::Write;

use clinicd_watermark::{Stamp, stamp_update};
use lopdf::{Document, Object, Stream, dictionary};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("generate") => generate(&args[2], args[3].parse().unwrap()),
        Some("stamp") => stamp(&args[2], args.get(3)),
        _ => panic!("usage: stamp_memory generate FILE MIB | stamp FILE [OUT]"),
    }
}

fn generate(path: &str, mib: usize) {
    const PAGE_IMAGE: usize = 1024 * 1024;
    let mut doc = Document::with_version("1.5");
    let tree = doc.new_object_id();
    let mut kids = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..mib {
        let pixels: Vec<u8> = (0..PAGE_IMAGE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let image = doc.add_object(Stream::new(
            dictionary! {
                "Type" => "XObject", "Subtype" => "Image", "Width" => 1024, "Height" => 1024,
                "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8,
            },
            pixels,
        ));
        let content = doc.add_object(Stream::new(
            dictionary! {},
            b"q 500 0 0 500 50 150 cm /Im0 Do Q".to_vec(),
        ));
        let page = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => tree, "Contents" => content,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
            "Resources" => dictionary! { "XObject" => dictionary! { "Im0" => image } },
        });
        kids.push(Object::Reference(page));
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        tree,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Count" => count, "Kids" => kids }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => tree });
    doc.trailer.set("Root", catalog);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    doc.save_to(&mut file).unwrap();
    file.flush().unwrap();
}

/// Resident memory in KiB: `VmHWM` is the peak, `VmRSS` the current.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn stamp(path: &str, out: Option<&String>) {
    let before = status_kib("VmRSS:");
    let pdf = std::fs::read(path).unwrap();
    let size = pdf.len() as f64 / 1024.0;
    let started = std::time::Instant::now();
    let appended = stamp_update(
        pdf,
        &Stamp {
            line: "Downloaded by bench at 2026-12-03T10:00:00Z - confidential: contains PHI".into(),
            download_id: "0193a4b2-7c1d-7e00-8000-000000000001".into(),
        },
    )
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    println!(
        "{{\"file_mib\":{:.1},\"appended_bytes\":{},\"seconds\":{:.2},\"baseline_mib\":{:.1},\"peak_mib\":{:.1},\"peak_over_file\":{:.2}}}",
        size / 1024.0,
        appended.len(),
        seconds,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak - before) as f64 / size
    );
    // The stamped copy, for a look in another reader.
    if let Some(out) = out {
        let mut whole = std::fs::read(path).unwrap();
        whole.extend_from_slice(&appended);
        std::fs::write(out, whole).unwrap();
    }
}
