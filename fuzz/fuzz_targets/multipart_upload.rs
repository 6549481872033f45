//! An upload body from a client: the multipart reader exactly as the upload endpoint runs it
//! up to storing, on a body cut into arbitrary chunks. Must give the file or a 4xx problem,
//! never a panic, a hang or a 5xx. Twin: crates/api/src/routes/records/files.rs, `twin`.
#![no_main]

use actix_web::ResponseError;
use clinicd_api::routes::records::files::read_upload_form;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u16>, &[u8])| {
    let (cuts, body) = input;
    let mut points: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % (body.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([body.len()]) {
        chunks.push(body[start..point].to_vec());
        start = point;
    }
    if let Err(problem) = read_upload_form(chunks) {
        assert!(problem.status_code().is_client_error(), "{problem:?}");
    }
});
